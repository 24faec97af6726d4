package agent

// WarmParam, set to 1 on the guest kernel's command line (hull.warm=1),
// asks the agent to create and remove one throwaway container before it
// answers the host. A pool sets it for the VMs it boots ahead of need:
// the first container a guest creates pays for paging in, and under TCG
// translating, everything on the way (the kernel's namespace, mount and
// cgroup code, runc init's Go runtime); a warmed VM's claimer does not.
// The agent also remounts the cgroup hierarchy with favordynmods then.
const WarmParam = "hull.warm"
