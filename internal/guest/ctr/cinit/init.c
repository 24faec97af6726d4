// hull-init: the container init of the guest agent.
//
// The agent re-executes its own binary as "hull-init create" or "hull-init
// exec". This constructor runs before the Go runtime starts, so the
// process is single-threaded and may join a mount namespace, and it never
// returns: it sets the container up from a plan the agent wrote, then
// execs the container's process or exits with an error reported on the
// sync descriptor.
//
// Descriptors: 3 the plan (read to its end), 4 the sync channel (the
// agent reads 'R' when a created container is ready, an "E<message>" on
// failure, and end of file once the process has been executed), 5 in
// create mode the start channel (one byte starts the process; end of file
// makes init exit). The plan names further descriptors by number.
//
// The plan is a sequence of operations. Each is a little-endian uint32
// count of fields followed by the fields, each a uint32 length and that
// many bytes (no NUL inside). The first field names the operation. The
// agent builds and validates the plan (internal/guest/ctr); this file
// only carries it out. Paths inside the container are resolved with
// openat2(RESOLVE_IN_ROOT), so no symlink of the container's image can
// lead an operation out of its root.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <termios.h>
#include <unistd.h>

#define PLAN_FD 3
#define SYNC_FD 4
#define START_FD 5
#define PLAN_MAX (4 << 20)
#define MAX_FIELDS 4096

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

extern char **environ;

static int root_fd = -1;       // the container's root: all paths resolve in it
static const char *cwd_later;  // a cwd root could not enter, tried again as the user
static char **proc_env;        // the process's environment ("env" operation)
static int console_master = -1, console_slave = -1;
static unsigned long root_prop; // rootfsPropagation: "/" gets it after pivot_root

static void report(const char *msg) {
	size_t n = strlen(msg);
	char buf[1 + 4096];
	if (n > sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	buf[0] = 'E';
	memcpy(buf + 1, msg, n);
	ssize_t r = write(SYNC_FD, buf, n + 1);
	(void)r;
	_exit(1);
}

// fail reports "<what>: <strerror(errno)>" to the agent and exits.
static void fail(const char *fmt, ...) {
	int err = errno;
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(err));
	report(msg);
}

// failx reports a message without an errno.
static void failx(const char *fmt, ...) {
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	report(msg);
}

// ---- the plan ----

static char *plan;
static size_t plan_len, plan_off;

static void read_plan(void) {
	size_t cap = 64 << 10;
	plan = malloc(cap);
	if (!plan)
		failx("reading the plan: out of memory");
	for (;;) {
		if (plan_len == cap) {
			if (cap >= PLAN_MAX)
				failx("reading the plan: larger than %d bytes", PLAN_MAX);
			cap *= 2;
			plan = realloc(plan, cap);
			if (!plan)
				failx("reading the plan: out of memory");
		}
		ssize_t n = read(PLAN_FD, plan + plan_len, cap - plan_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail("reading the plan");
		if (n == 0)
			break;
		plan_len += (size_t)n;
	}
	close(PLAN_FD);
}

static uint32_t read_u32(void) {
	if (plan_len - plan_off < 4)
		failx("malformed plan: truncated at byte %zu", plan_off);
	uint32_t v;
	memcpy(&v, plan + plan_off, 4);
	plan_off += 4;
	return v;
}

// next_op returns the next operation's fields, NULL-terminated, and
// their count in *n; NULL at the end of the plan.
static char **next_op(int *n) {
	if (plan_off == plan_len)
		return NULL;
	uint32_t count = read_u32();
	if (count == 0 || count > MAX_FIELDS)
		failx("malformed plan: operation with %u fields", count);
	char **f = calloc(count + 1, sizeof(char *));
	if (!f)
		failx("reading the plan: out of memory");
	for (uint32_t i = 0; i < count; i++) {
		uint32_t len = read_u32();
		if (len > plan_len - plan_off)
			failx("malformed plan: field overruns the plan");
		if (memchr(plan + plan_off, 0, len))
			failx("malformed plan: NUL inside a field");
		f[i] = strndup(plan + plan_off, len);
		if (!f[i])
			failx("reading the plan: out of memory");
		plan_off += len;
	}
	*n = (int)count;
	return f;
}

static unsigned long long num(const char *s, const char *what) {
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0')
		failx("malformed plan: %s \"%s\" is not a number", what, s);
	return v;
}

static int fdnum(const char *s) {
	unsigned long long v = num(s, "descriptor");
	if (v < 3 || v > 1024)
		failx("malformed plan: descriptor %llu", v);
	return (int)v;
}

// ---- paths inside the root ----

static int openat2_in_root(const char *path, uint64_t flags) {
	struct open_how how = {
	    .flags = flags | O_CLOEXEC,
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd;
	do
		fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);
	return fd;
}

enum make { MAKE_NONE, MAKE_DIR, MAKE_FILE };

// resolve opens path inside the root as O_PATH. With mk, what is missing
// is created: directories along the way, and the last component as a
// directory or an empty file. Returns -1 with errno on failure.
static int resolve(const char *path, enum make mk) {
	int fd = openat2_in_root(path, O_PATH);
	if (fd >= 0 || errno != ENOENT || mk == MAKE_NONE)
		return fd;
	char *p = strdup(path);
	if (!p)
		return -1;
	int parent = openat2_in_root("/", O_PATH);
	for (char *c = p; parent >= 0 && *c;) {
		while (*c == '/')
			c++;
		if (!*c)
			break;
		char *end = strchr(c, '/');
		int last = end == NULL || end[strspn(end, "/")] == '\0';
		if (end)
			*end = '\0';
		if (strcmp(c, "..") == 0) {
			errno = EINVAL;
			close(parent);
			parent = -1;
			break;
		}
		int next = openat(parent, c, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 && errno == ENOENT) {
			if (last && mk == MAKE_FILE) {
				int f = openat(parent, c, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
				if (f >= 0)
					close(f);
			} else {
				mkdirat(parent, c, 0755);
			}
			next = openat(parent, c, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		} else if (next >= 0) {
			// An existing component may be a symlink: follow it, in the root.
			struct stat st;
			if (fstat(next, &st) == 0 && S_ISLNK(st.st_mode)) {
				close(next);
				*(end ? end : c + strlen(c)) = '\0';
				next = openat2_in_root(p, O_PATH);
			}
		}
		close(parent);
		parent = next;
		if (end) {
			*end = '/';
			c = end;
		} else {
			break;
		}
	}
	free(p);
	if (parent < 0)
		return -1;
	close(parent);
	return openat2_in_root(path, O_PATH);
}

static void fd_path(char *buf, size_t n, int fd) {
	snprintf(buf, n, "/proc/self/fd/%d", fd);
}

// mount_flags are the flags a bind remount must keep: locked ones fail
// the remount when left out.
static unsigned long mount_flags(int fd) {
	struct statvfs sv;
	if (fstatvfs(fd, &sv) != 0)
		return 0;
	unsigned long f = 0;
	if (sv.f_flag & ST_NOSUID)
		f |= MS_NOSUID;
	if (sv.f_flag & ST_NODEV)
		f |= MS_NODEV;
	if (sv.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (sv.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (sv.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (sv.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

// remount_ro makes the mount at path read-only, keeping its other flags.
static void remount_ro(const char *path) {
	int fd = resolve(path, MAKE_NONE);
	if (fd < 0)
		fail("making %s read-only", path);
	char p[64];
	fd_path(p, sizeof(p), fd);
	if (mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | mount_flags(fd), NULL) != 0)
		fail("making %s read-only", path);
	close(fd);
}

// ---- operations ----

#define PROPAGATION (MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE)

// unescape decodes a mountinfo path's octal escapes ("\040") in place.
static void unescape(char *s) {
	char *w = s;
	for (char *r = s; *r; r++, w++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
			*w = (char)((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
			r += 3;
		} else {
			*w = *r;
		}
	}
	*w = 0;
}

// make_parent_private makes the mount that holds PATH private when it is
// shared, as runc does: pivot_root refuses a new root whose parent mount
// is shared, which it is under rootfsPropagation "rshared". Only that
// mount changes, not the ones below it.
static void make_parent_private(const char *path) {
	char real[PATH_MAX], best[PATH_MAX] = "";
	if (!realpath(path, real))
		fail("resolving the rootfs %s", path);
	FILE *mi = fopen("/proc/self/mountinfo", "re");
	if (!mi)
		fail("opening /proc/self/mountinfo");
	char *line = NULL;
	size_t cap = 0, bestlen = 0;
	int shared = 0;
	while (getline(&line, &cap, mi) > 0) {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE ...
		char *save, *mp = NULL;
		int i = 0, sh = 0;
		for (char *t = strtok_r(line, " \n", &save); t; t = strtok_r(NULL, " \n", &save), i++) {
			if (i == 4)
				mp = t;
			else if (i >= 6 && !strcmp(t, "-"))
				break;
			else if (i >= 6 && !strncmp(t, "shared:", 7))
				sh = 1;
		}
		if (!mp)
			continue;
		unescape(mp);
		size_t n = strlen(mp);
		int holds = !strcmp(mp, "/") || (!strncmp(real, mp, n) && (real[n] == '/' || real[n] == 0));
		// The last of the mounts on one point is the visible one.
		if (holds && n >= bestlen && n < sizeof(best)) {
			memcpy(best, mp, n + 1);
			bestlen = n;
			shared = sh;
		}
	}
	free(line);
	fclose(mi);
	if (shared && mount("", best, "", MS_PRIVATE, NULL) != 0)
		fail("making %s private", best);
}

// op_root: root PATH PROPAGATION. Sets the propagation of / (rslave when
// 0), binds PATH onto itself (pivot_root wants a mount) and makes it the
// root that paths resolve in.
static void op_root(char **f) {
	unsigned long prop = num(f[2], "propagation");
	unsigned long set = prop ? prop : MS_SLAVE | MS_REC;
	if (mount("", "/", "", set, NULL) != 0)
		fail("setting the propagation of /");
	root_prop = prop;
	// A recursive slave, private or unbindable leaves no mount shared
	// (the default, rslave, among them): nothing to look up then.
	if (!(set & MS_REC) || (set & MS_SHARED))
		make_parent_private(f[1]);
	if (mount(f[1], f[1], "", MS_BIND | MS_REC, NULL) != 0)
		fail("binding the rootfs %s", f[1]);
	root_fd = open(f[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0)
		fail("opening the rootfs %s", f[1]);
}

// op_mount: mount SOURCE DEST FSTYPE FLAGS DATA dir|file.
// A bind mount with flags beyond MS_BIND|MS_REC is remounted with them.
static void op_mount(char **f) {
	const char *src = f[1], *dst = f[2], *type = f[3], *data = f[5];
	unsigned long flags = num(f[4], "mount flags");
	enum make mk = strcmp(f[6], "file") == 0 ? MAKE_FILE : MAKE_DIR;
	int fd = resolve(dst, mk);
	if (fd < 0)
		fail("mount %s: creating the mount point", dst);
	char p[64];
	fd_path(p, sizeof(p), fd);
	unsigned long prop = flags & PROPAGATION;
	flags &= ~PROPAGATION;
	if (flags & MS_BIND) {
		if (mount(src, p, "", MS_BIND | (flags & MS_REC), NULL) != 0)
			fail("mount %s on %s", src, dst);
		unsigned long rest = flags & ~(MS_BIND | MS_REC | MS_REMOUNT);
		if (rest) {
			close(fd);
			if ((fd = resolve(dst, MAKE_NONE)) < 0)
				fail("mount %s: reopening", dst);
			fd_path(p, sizeof(p), fd);
			if (mount(NULL, p, NULL, rest | MS_BIND | MS_REMOUNT | mount_flags(fd), NULL) != 0)
				fail("remounting %s", dst);
		}
	} else if (mount(src, p, type, flags, *data ? data : NULL) != 0) {
		fail("mount %s %s on %s", type, src, dst);
	}
	if (prop) {
		close(fd);
		if ((fd = resolve(dst, MAKE_NONE)) < 0)
			fail("mount %s: reopening", dst);
		fd_path(p, sizeof(p), fd);
		for (unsigned long b = 1; b; b <<= 1) {
			if ((prop & b) && mount(NULL, p, NULL, b | (flags & MS_REC), NULL) != 0)
				fail("setting the propagation of %s", dst);
		}
	}
	close(fd);
}

// open_parent opens, as a directory, the parent of path inside the root
// (created when missing) and returns path's last component in *base.
// what names the operation in errors.
static int open_parent(const char *what, const char *path, const char **base) {
	char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
	if (!slash || !slash[1])
		failx("%s %s: not a file path", what, path);
	*slash = '\0';
	*base = path + (slash - dir) + 1;
	int d = resolve(*dir ? dir : "/", MAKE_DIR);
	if (d < 0)
		fail("%s %s: creating its directory", what, path);
	int dfd = openat(d, ".", O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		fail("%s %s: opening its directory", what, path);
	close(d);
	free(dir);
	return dfd;
}

// op_mknod: mknod PATH MODE MAJOR MINOR UID GID (MODE holds the type).
static void op_mknod(char **f) {
	const char *path = f[1], *base;
	mode_t mode = (mode_t)num(f[2], "mode");
	dev_t dev = makedev(num(f[3], "major"), num(f[4], "minor"));
	int dfd = open_parent("mknod", path, &base);
	if (mknodat(dfd, base, mode, dev) != 0 && errno != EEXIST)
		fail("mknod %s", path);
	if (fchownat(dfd, base, (uid_t)num(f[5], "uid"), (gid_t)num(f[6], "gid"), AT_SYMLINK_NOFOLLOW) != 0)
		fail("chown %s", path);
	close(dfd);
}

// op_symlink: symlink TARGET PATH; an existing PATH is replaced when it
// is not a directory.
static void op_symlink(char **f) {
	const char *target = f[1], *path = f[2], *base;
	int dfd = open_parent("symlink", path, &base);
	if (symlinkat(target, dfd, base) != 0) {
		if (errno != EEXIST || unlinkat(dfd, base, 0) != 0 || symlinkat(target, dfd, base) != 0)
			fail("symlink %s", path);
	}
	close(dfd);
}

// op_pivot: pivot_root into the root and detach the old one.
static void op_pivot(void) {
	if (fchdir(root_fd) != 0)
		fail("entering the rootfs");
	int old = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (old < 0)
		fail("opening the old root");
	if (syscall(SYS_pivot_root, ".", ".") != 0)
		fail("pivot_root");
	// The old root is now stacked on "."; keep its unmount from
	// propagating to the agent's namespace, then detach it.
	if (mount("", ".", "", MS_SLAVE | MS_REC, NULL) != 0)
		fail("making the old root a slave");
	if (umount2(".", MNT_DETACH) != 0)
		fail("detaching the old root");
	if (chdir("/") != 0)
		fail("chdir /");
	// Now that "/" is the container's root, it gets the propagation the
	// spec asked for, as in runc.
	if (root_prop && mount("", "/", "", root_prop, NULL) != 0)
		fail("setting the root's propagation");
	close(old);
	close(root_fd);
	root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0)
		fail("opening the new root");
}

// op_mask: mask PATH. A directory gets an empty read-only tmpfs, anything
// else /dev/null; a missing path is left alone.
static void op_mask(char **f) {
	int fd = resolve(f[1], MAKE_NONE);
	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0)
		fail("masking %s", f[1]);
	struct stat st;
	if (fstat(fd, &st) != 0)
		fail("masking %s", f[1]);
	char p[64];
	fd_path(p, sizeof(p), fd);
	int r;
	if (S_ISDIR(st.st_mode)) {
		r = mount("tmpfs", p, "tmpfs", MS_RDONLY, "size=0");
	} else {
		int null = resolve("/dev/null", MAKE_NONE);
		char np[64];
		if (null < 0)
			fail("masking %s: /dev/null", f[1]);
		fd_path(np, sizeof(np), null);
		r = mount(np, p, "", MS_BIND, NULL);
		close(null);
	}
	if (r != 0)
		fail("masking %s", f[1]);
	close(fd);
}

// op_readonly: readonly PATH; a missing path is left alone.
static void op_readonly(char **f) {
	int fd = resolve(f[1], MAKE_NONE);
	if (fd < 0 && errno == ENOENT)
		return;
	if (fd < 0)
		fail("making %s read-only", f[1]);
	char p[64];
	fd_path(p, sizeof(p), fd);
	if (mount(p, p, "", MS_BIND | MS_REC, NULL) != 0)
		fail("binding %s", f[1]);
	close(fd);
	remount_ro(f[1]);
}

// op_write: write PATH VALUE, for sysctls and oom_score_adj.
static void op_write(char **f) {
	int fd = openat2_in_root(f[1], O_WRONLY);
	if (fd < 0)
		fail("opening %s", f[1]);
	size_t n = strlen(f[2]);
	if (write(fd, f[2], n) != (ssize_t)n)
		fail("writing %s", f[1]);
	close(fd);
}

static void op_setns(char **f) {
	int fd = fdnum(f[1]);
	if (setns(fd, (int)num(f[2], "namespace type")) != 0)
		fail("joining namespace %s", f[2]);
	close(fd);
}

// op_console: console SOCKET UID GID. Opens a pty in the container's
// devpts, hands the master to the agent on SOCKET and keeps the slave for
// the process's stdio and controlling terminal (op_exec).
static void op_console(char **f) {
	int sock = fdnum(f[1]);
	console_master = openat2_in_root("/dev/ptmx", O_RDWR | O_NOCTTY);
	if (console_master < 0) {
		// /dev/ptmx may be a symlink to pts/ptmx: resolve it as one.
		int fd = resolve("/dev/pts/ptmx", MAKE_NONE);
		char p[64];
		if (fd < 0)
			fail("opening /dev/ptmx");
		fd_path(p, sizeof(p), fd);
		console_master = open(p, O_RDWR | O_NOCTTY | O_CLOEXEC);
		close(fd);
		if (console_master < 0)
			fail("opening /dev/pts/ptmx");
	}
	int unlock = 0;
	if (ioctl(console_master, TIOCSPTLCK, &unlock) != 0)
		fail("unlocking the pty");
	console_slave = ioctl(console_master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (console_slave < 0)
		fail("opening the pty's slave");
	if (fchown(console_slave, (uid_t)num(f[2], "uid"), (gid_t)num(f[3], "gid")) != 0)
		fail("chown of the pty's slave");
	char name[] = "pty";
	struct iovec iov = {.iov_base = name, .iov_len = sizeof(name) - 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	memset(ctl, 0, sizeof(ctl));
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &console_master, sizeof(int));
	if (sendmsg(sock, &msg, 0) < 0)
		fail("sending the pty master");
	close(console_master);
	close(sock);
}

static void op_rlimit(char **f) {
	struct rlimit rl = {.rlim_cur = num(f[2], "rlimit"), .rlim_max = num(f[3], "rlimit")};
	if (setrlimit((int)num(f[1], "rlimit type"), &rl) != 0)
		fail("setting rlimit %s", f[1]);
}

// op_bounding: bounding MASK drops what MASK leaves out of the bounding set.
static void op_bounding(char **f) {
	unsigned long long keep = num(f[1], "capability mask");
	for (int c = 0; c < 64; c++) {
		if (keep & (1ULL << c))
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0) {
			if (errno == EINVAL)
				break; // past the kernel's last capability
			fail("dropping capability %d from the bounding set", c);
		}
	}
}

// op_user: user UID GID [GROUP...]. Capabilities survive the change of
// user (op_caps sets them afterwards).
static void op_user(char **f, int n) {
	uid_t uid = (uid_t)num(f[1], "uid");
	gid_t gid = (gid_t)num(f[2], "gid");
	int ng = n - 3;
	gid_t *groups = calloc(ng > 0 ? ng : 1, sizeof(gid_t));
	for (int i = 0; i < ng; i++)
		groups[i] = (gid_t)num(f[3 + i], "group");
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
		fail("keeping capabilities");
	if (setgroups(ng, groups) != 0)
		fail("setting additional groups");
	if (setresgid(gid, gid, gid) != 0)
		fail("setting gid %u", gid);
	if (setresuid(uid, uid, uid) != 0)
		fail("setting uid %u", uid);
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
		fail("clearing keep-capabilities");
	free(groups);
	if (cwd_later && chdir(cwd_later) != 0)
		fail("chdir to %s", cwd_later);
	cwd_later = NULL;
}

// op_caps: caps EFFECTIVE PERMITTED INHERITABLE AMBIENT (64-bit masks).
static void op_caps(char **f) {
	unsigned long long e = num(f[1], "capability mask"), p = num(f[2], "capability mask"),
			   i = num(f[3], "capability mask"), a = num(f[4], "capability mask");
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {
	    {.effective = (uint32_t)e, .permitted = (uint32_t)p, .inheritable = (uint32_t)i},
	    {.effective = (uint32_t)(e >> 32), .permitted = (uint32_t)(p >> 32), .inheritable = (uint32_t)(i >> 32)},
	};
	if (syscall(SYS_capset, &h, d) != 0)
		fail("setting capabilities");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
		fail("clearing ambient capabilities");
	for (int c = 0; c < 64; c++) {
		if ((a & (1ULL << c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0)
			fail("raising ambient capability %d", c);
	}
}

// op_cwd: chdir now; when root may not enter it (root-squashed shares),
// again as the process's user (op_user).
static void op_cwd(char **f) {
	if (chdir(f[1]) != 0)
		cwd_later = f[1];
}

static void op_env(char **f, int n) {
	proc_env = calloc(n, sizeof(char *));
	for (int i = 1; i < n; i++)
		proc_env[i - 1] = f[i];
}

// lookup finds name as execve would from a shell: with a slash as is,
// otherwise along the PATH of the process's environment.
static const char *lookup(const char *name) {
	if (strchr(name, '/')) {
		struct stat st;
		if (stat(name, &st) != 0)
			fail("exec: \"%s\": stat %s", name, name);
		if (S_ISDIR(st.st_mode))
			failx("exec: \"%s\": is a directory", name);
		if (access(name, X_OK) != 0)
			fail("exec: \"%s\"", name);
		return name;
	}
	const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (char **e = proc_env; e && *e; e++) {
		if (strncmp(*e, "PATH=", 5) == 0)
			path = *e + 5;
	}
	char *dirs = strdup(path), *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *full;
		if (asprintf(&full, "%s/%s", *d ? d : ".", name) < 0)
			failx("out of memory");
		struct stat st;
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && access(full, X_OK) == 0)
			return full;
		free(full);
	}
	failx("exec: \"%s\": executable file not found in $PATH", name);
	return NULL;
}

// op_exec: exec ARG0 [ARG...]. In create mode it reports the container
// ready and waits for the start byte first.
static void op_exec(char **f, int n, int create) {
	const char *path = lookup(f[1]);
	if (create) {
		if (write(SYNC_FD, "R", 1) != 1)
			fail("reporting ready");
		char b;
		ssize_t r;
		do
			r = read(START_FD, &b, 1);
		while (r < 0 && errno == EINTR);
		if (r != 1)
			_exit(0); // removed before it was started
		close(START_FD);
	}
	if (console_slave >= 0) {
		if (setsid() < 0)
			fail("setsid");
		if (ioctl(console_slave, TIOCSCTTY, 0) != 0)
			fail("setting the controlling terminal");
		for (int i = 0; i < 3; i++) {
			if (dup2(console_slave, i) < 0)
				fail("dup2 of the pty's slave");
		}
		if (console_slave > 2)
			close(console_slave);
	}
	// Nothing of the agent's but stdio is inherited (the sync descriptor
	// closes on exec, telling the agent the exec happened).
	syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
	execve(path, f + 1, proc_env ? proc_env : (char *[]){NULL});
	fail("exec %s", path);
	(void)n;
}

static void run(int create) {
	if (fcntl(SYNC_FD, F_SETFD, FD_CLOEXEC) != 0)
		_exit(1); // no agent to report to
	// Until the exec, /proc/<pid>/exe is the agent's binary: keep the
	// container's processes from opening it or tracing this one.
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		fail("prctl(PR_SET_DUMPABLE)");
	read_plan();
	char **f;
	int n;
	while ((f = next_op(&n)) != NULL) {
		const char *op = f[0];
#define NEED(k)                                                                      \
	if (n != (k))                                                                \
		failx("malformed plan: %s takes %d fields, got %d", op, (k) - 1, n - 1)
		if (!strcmp(op, "root")) {
			NEED(3);
			op_root(f);
		} else if (!strcmp(op, "enter")) {
			// exec mode, after setns: the root is the namespace's.
			NEED(1);
			if ((root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
				fail("opening the container's root");
		} else if (!strcmp(op, "setns")) {
			NEED(3);
			op_setns(f);
		} else if (!strcmp(op, "unshare")) {
			NEED(2);
			if (unshare((int)num(f[1], "unshare flags")) != 0)
				fail("unshare");
		} else if (!strcmp(op, "mount")) {
			NEED(7);
			op_mount(f);
		} else if (!strcmp(op, "mknod")) {
			NEED(7);
			op_mknod(f);
		} else if (!strcmp(op, "symlink")) {
			NEED(3);
			op_symlink(f);
		} else if (!strcmp(op, "hostname")) {
			NEED(2);
			if (sethostname(f[1], strlen(f[1])) != 0)
				fail("setting the hostname");
		} else if (!strcmp(op, "domainname")) {
			NEED(2);
			if (setdomainname(f[1], strlen(f[1])) != 0)
				fail("setting the domain name");
		} else if (!strcmp(op, "pivot")) {
			NEED(1);
			op_pivot();
		} else if (!strcmp(op, "remountro")) {
			NEED(2);
			remount_ro(f[1]);
		} else if (!strcmp(op, "mask")) {
			NEED(2);
			op_mask(f);
		} else if (!strcmp(op, "readonly")) {
			NEED(2);
			op_readonly(f);
		} else if (!strcmp(op, "write")) {
			NEED(3);
			op_write(f);
		} else if (!strcmp(op, "console")) {
			NEED(4);
			op_console(f);
		} else if (!strcmp(op, "rlimit")) {
			NEED(4);
			op_rlimit(f);
		} else if (!strcmp(op, "bounding")) {
			NEED(2);
			op_bounding(f);
		} else if (!strcmp(op, "user")) {
			if (n < 3)
				failx("malformed plan: user takes at least 2 fields");
			op_user(f, n);
		} else if (!strcmp(op, "caps")) {
			NEED(5);
			op_caps(f);
		} else if (!strcmp(op, "nnp")) {
			NEED(1);
			if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
				fail("setting no_new_privs");
		} else if (!strcmp(op, "cwd")) {
			NEED(2);
			op_cwd(f);
		} else if (!strcmp(op, "env")) {
			op_env(f, n);
		} else if (!strcmp(op, "exec")) {
			if (n < 2)
				failx("malformed plan: exec without arguments");
			op_exec(f, n, create);
		} else {
			failx("malformed plan: unknown operation %s", op);
		}
#undef NEED
	}
	failx("malformed plan: it ends without exec");
}

__attribute__((constructor)) static void hull_init(int argc, char **argv, char **envp) {
	(void)envp;
	if (argc < 2 || strcmp(argv[0], "hull-init") != 0)
		return;
	if (strcmp(argv[1], "create") == 0)
		run(1);
	if (strcmp(argv[1], "exec") == 0)
		run(0);
	_exit(1);
}
