package storage

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/gozmm/zmm/chunk"
)

// Shared is a Region over a MAP_SHARED mapping of a memfd or a file, so
// that other processes can map the same bytes: a heap over it in one
// process allocates, and others read and write its blocks.
//
// One process owns the heap: the one that made the Shared with NewMemfd or
// CreateShared. Allocation is not safe across processes, so the others
// attach (AttachFile, AttachShared) to read and write blocks, and cannot
// allocate. Each process maps the memory at its own address, so blocks
// hold offsets from the start of the mapping, not pointers: Offset turns
// an address into an offset, At turns it back.
//
// Unmapped and truncated mappings and pages a heap releases (zmm's GC) are
// given back to the system (fallocate punch-hole), in every process that
// maps them: they read back as zeros.
type Shared struct {
	Region
	f     *os.File
	owner bool
}

// NewMemfd makes size bytes of shared memory with memfd_create and maps
// them: a Shared owned by this process. size must be a positive multiple of
// 2 MiB. Pass File to a child process (exec.Cmd.ExtraFiles) for it to
// attach with AttachFile. name is only a label (/proc/PID/fd shows
// memfd:name).
func NewMemfd(name string, size uintptr) (*Shared, error) {
	if err := checkSharedSize(size); err != nil {
		return nil, err
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("storage: memfd_create(%q): %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "memfd:"+name)
	s, err := newShared(f, size, true, 0)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return s, nil
}

// CreateShared creates the file at path (it must not exist), sizes it to
// size bytes, a positive multiple of 2 MiB, and maps it: a Shared owned by
// this process. A file on /dev/shm (tmpfs) costs no disk. Other processes
// attach with AttachShared(path). The file stays until the caller removes
// it.
func CreateShared(path string, size uintptr) (*Shared, error) {
	if err := checkSharedSize(size); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s, err := newShared(f, size, true, 0)
	if err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, err
	}
	return s, nil
}

// AttachShared maps the file at path, made by CreateShared in another
// process, for reading and writing blocks by offset.
func AttachShared(path string) (*Shared, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s, err := AttachFile(f)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return s, nil
}

// AttachFile maps f, a memfd or file another process made with NewMemfd or
// CreateShared (received as os.NewFile(3, "memfd") from ExtraFiles, for
// example), for reading and writing blocks by offset. The Shared takes f
// over: Close closes it.
func AttachFile(f *os.File) (*Shared, error) { return attach(f, 0) }

// AttachFileAt maps f at addr, the address its owner maps it at (Addr in
// the owner), with MAP_FIXED_NOREPLACE: then addresses, not only offsets,
// are the same in both processes. It fails, and maps nothing, when
// anything is mapped in the way; use AttachFile then. Blocks should still
// hold offsets: nothing guarantees the address is free in every process.
func AttachFileAt(f *os.File, addr uintptr) (*Shared, error) {
	if addr == 0 || addr&(chunk.Size-1) != 0 {
		return nil, fmt.Errorf("storage: cannot attach %s at %#x: not a 2 MiB-aligned address", f.Name(), addr)
	}
	return attach(f, addr)
}

func attach(f *os.File, at uintptr) (*Shared, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	size := uintptr(fi.Size())
	if err := checkSharedSize(size); err != nil {
		return nil, fmt.Errorf("storage: cannot attach %s: %w", f.Name(), err)
	}
	return newShared(f, size, false, at)
}

func checkSharedSize(size uintptr) error {
	if size == 0 || size&(chunk.Size-1) != 0 {
		return fmt.Errorf("storage: shared memory of %d bytes: the size must be a positive multiple of 2 MiB", size)
	}
	return nil
}

// newShared maps f. The owner sizes the file first.
func newShared(f *os.File, size uintptr, owner bool, at uintptr) (*Shared, error) {
	if owner {
		if err := f.Truncate(int64(size)); err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
	}
	var addr uintptr
	var err error
	if at != 0 {
		addr, err = mapSharedAt(int(f.Fd()), size, at)
	} else {
		addr, err = mapShared(int(f.Fd()), size)
	}
	if err != nil {
		return nil, fmt.Errorf("storage: cannot map %s: %w", f.Name(), err)
	}
	name := fmt.Sprintf("shared %s %#x+%s", f.Name(), addr, formatSize(size))
	if !owner {
		name += " (attached)"
	}
	s := &Shared{f: f, owner: owner}
	if err := s.init(addr, size, name); err != nil {
		_ = unix.MunmapPtr(ptr(addr), size)
		return nil, err
	}
	s.release = s.punch
	return s, nil
}

// mapShared maps the file at a 2 MiB-aligned address: it reserves an
// aligned range (inaccessible anonymous memory, with slack to align), maps
// the file over the aligned part with MAP_FIXED, which replaces only that
// reservation, and unmaps the slack.
func mapShared(fd int, size uintptr) (uintptr, error) {
	slack := uintptr(chunk.Size) - chunk.OSPageSize()
	res, err := unix.MmapPtr(-1, 0, nil, size+slack, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return 0, fmt.Errorf("reserving %d bytes: %w", size+slack, err)
	}
	base := uintptr(res)
	addr := (base + chunk.Size - 1) &^ (chunk.Size - 1)
	if _, err := unix.MmapPtr(fd, 0, ptr(addr), size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_FIXED); err != nil {
		_ = unix.MunmapPtr(res, size+slack)
		return 0, fmt.Errorf("mmap of %d bytes: %w", size, err)
	}
	if head := addr - base; head != 0 {
		_ = unix.MunmapPtr(res, head)
	}
	if tail := base + size + slack - (addr + size); tail != 0 {
		_ = unix.MunmapPtr(ptr(addr+size), tail)
	}
	return addr, nil
}

// mapSharedAt maps the file at exactly addr, or fails.
func mapSharedAt(fd int, size, addr uintptr) (uintptr, error) {
	p, err := unix.MmapPtr(fd, 0, ptr(addr), size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_FIXED_NOREPLACE)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("%#x+%s is already in use in this process: %w", addr, formatSize(size), err)
		}
		return 0, fmt.Errorf("mmap of %d bytes at %#x: %w", size, addr, err)
	}
	if uintptr(p) != addr {
		// A kernel before 4.17, and qemu-user 7, take MAP_FIXED_NOREPLACE
		// as a hint.
		_ = unix.MunmapPtr(p, size)
		return 0, fmt.Errorf("mmap of %d bytes at %#x: the kernel mapped %#x instead (it took MAP_FIXED_NOREPLACE as a hint: the address is in use)", size, addr, uintptr(p))
	}
	return addr, nil
}

// Map hands out a mapping, as Region.Map, in the owner only.
func (s *Shared) Map(size uintptr) (uintptr, error) {
	if !s.owner {
		return 0, fmt.Errorf("storage: %s: only the process that created shared memory allocates in it; an attached process reads and writes blocks by offset", s.name)
	}
	return s.Region.Map(size)
}

// punch gives the pages of [addr, addr+size) back to the system: they
// read as zeros afterwards, in every process.
func (s *Shared) punch(addr, size uintptr) {
	off := int64(addr - s.addr)
	err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(size))
	if err != nil {
		// A file system without punch-hole: MADV_REMOVE does the same on
		// those that support it; without either, the pages stay.
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, addr, size, unix.MADV_REMOVE)
	}
}

// File returns the memfd or file behind the mapping, for another process
// to attach to (exec.Cmd.ExtraFiles). It stays owned by s.
func (s *Shared) File() *os.File { return s.f }

// Fd returns the file descriptor behind the mapping.
func (s *Shared) Fd() uintptr { return s.f.Fd() }

// Owner reports whether this process made the shared memory (and may
// allocate in it) rather than attached to it.
func (s *Shared) Owner() bool { return s.owner }

// Offset returns the offset of addr from the start of the mapping: what a
// block should hold, and another process should be told, instead of addr.
// It panics if addr is not in the mapping.
func (s *Shared) Offset(addr uintptr) uintptr {
	if addr < s.addr || addr-s.addr >= s.size {
		panic(fmt.Sprintf("storage: %s: address %#x is not in the mapping", s.name, addr))
	}
	return addr - s.addr
}

// At returns the address of offset off in this process's mapping. It
// panics if off is not in the mapping.
func (s *Shared) At(off uintptr) uintptr {
	if off >= s.size {
		panic(fmt.Sprintf("storage: %s: offset %#x is beyond the mapping (%d bytes)", s.name, off, s.size))
	}
	return s.addr + off
}

// Bytes returns the n bytes at offset off as a slice over the mapping,
// valid until Close. It panics if they are not all in the mapping.
func (s *Shared) Bytes(off, n uintptr) []byte {
	if off > s.size || n > s.size-off {
		panic(fmt.Sprintf("storage: %s: %d bytes at offset %#x are beyond the mapping (%d bytes)", s.name, n, off, s.size))
	}
	return unsafeBytes(s.addr+off, n)
}

// Close unmaps the memory and closes the file, as Region.Close, which it
// extends: in the owner it fails while a heap still holds mappings of it
// (ErrInUse): close the heaps first. Blocks and addresses of the mapping
// are invalid afterwards. Closing twice does nothing.
func (s *Shared) Close() error {
	closed, err := s.shut()
	if !closed {
		return err
	}
	err = unix.MunmapPtr(ptr(s.addr), s.size)
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	// Unregistered once unmapped: until then no new Region may cover it.
	regions.remove(&s.Region)
	if err != nil {
		return fmt.Errorf("storage: %s: %w", s.name, err)
	}
	return nil
}
