package agent

// StorageDir is the guest directory under which the agent mounts a
// container's own storages (CreateContainerRequest.storages): each mount
// point lies below StorageDir/<container id>/.
const StorageDir = "/run/hull/storage"

// DriverBlk is the Storage driver of a hot-plugged virtio-blk disk, named
// by its serial.
const DriverBlk = "blk"

// MaxBlkSerial is the longest serial of a virtio-blk disk.
const MaxBlkSerial = 20

// BlockFilesystems are the filesystems a "blk" storage may hold.
var BlockFilesystems = []string{"ext4", "ext3", "ext2", "xfs"}
