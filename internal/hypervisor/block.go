package hypervisor

// BlockDevice is a host block device given to a running guest whole, as a
// virtio-blk disk that the guest finds by its serial. On q35 it needs a
// free PCIe root port (VM.HotplugPorts): the root bus takes no hot-plug.
type BlockDevice struct {
	// Path is the host's device node, e.g. /dev/loop3 or /dev/mapper/x.
	Path     string
	ReadOnly bool
	// Serial is what the guest reads in /sys/block/vdX/serial: at most
	// MaxBlockSerial letters, digits, '-' and '_'.
	Serial string
}

// MaxBlockSerial is the longest serial a virtio-blk disk can carry.
const MaxBlockSerial = 20
