package storage_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/chunk"
	"github.com/gozmm/zmm/internal/childtest"
	"github.com/gozmm/zmm/storage"
)

func newMemfd(t *testing.T, size uintptr) *storage.Shared {
	t.Helper()
	s, err := storage.NewMemfd("zmm-test", size)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// attachDup attaches to s in this process through a second descriptor, as
// another process would.
func attachDup(t *testing.T, s *storage.Shared) *storage.Shared {
	t.Helper()
	fd, err := syscall.Dup(int(s.Fd()))
	require.NoError(t, err)
	v, err := storage.AttachFile(os.NewFile(uintptr(fd), "dup"))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, v.Close()) })
	return v
}

// shmPath returns a fresh path on /dev/shm, removed when the test ends.
func shmPath(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm on this system")
	}
	p := filepath.Join("/dev/shm", fmt.Sprintf("zmm-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-")))
	_ = os.Remove(p)
	t.Cleanup(func() { _ = os.Remove(p) })
	return p
}

func TestSharedRejectsBadSizes(t *testing.T) {
	for _, size := range []uintptr{0, chunk.OSPageSize(), 3 * slot / 2} {
		_, err := storage.NewMemfd("bad", size)
		require.Error(t, err, "size %d", size)
		assert.Contains(t, err.Error(), "positive multiple of 2 MiB")
	}
}

func TestMemfdIsSharedBetweenMappings(t *testing.T) {
	s := newMemfd(t, 4*slot)
	assert.True(t, s.Owner())
	assert.Zero(t, s.Addr()%chunk.Size)
	assert.Equal(t, 4*slot, s.Size())
	assert.Contains(t, s.String(), "shared memfd:zmm-test 0x")
	assert.Contains(t, s.String(), "+8 MiB")

	a := mustMap(t, s, slot)
	off := s.Offset(a + 100)
	assert.Equal(t, uintptr(100), off)
	assert.Equal(t, a+100, s.At(off))
	copy(s.Bytes(off, 5), "hello")

	v := attachDup(t, s)
	assert.False(t, v.Owner())
	assert.NotEqual(t, s.Addr(), v.Addr(), "a second mapping has its own address")
	assert.Contains(t, v.String(), "(attached)")
	assert.Equal(t, "hello", string(v.Bytes(off, 5)), "the attached view sees the owner's bytes")
	copy(v.Bytes(off, 5), "HELLO")
	assert.Equal(t, "HELLO", string(bytesAt(a+100, 5)), "and the owner sees the attached view's")

	_, err := v.Map(slot)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "only the process that created shared memory allocates in it")

	assert.Panics(t, func() { s.At(s.Size()) })
	assert.Panics(t, func() { s.Offset(s.Addr() - 1) })
	assert.Panics(t, func() { s.Bytes(s.Size()-4, 5) })

	// Closing the owner while a mapping is live is refused.
	err = s.Close()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "still in use")
	require.NoError(t, s.Unmap(a, slot))
}

func TestSharedGivesPagesBack(t *testing.T) {
	s := newMemfd(t, 2*slot)
	v := attachDup(t, s)
	ps := chunk.OSPageSize()
	a := mustMap(t, s, 2*slot)
	b := bytesAt(a, 2*slot)
	for _, off := range []uintptr{0, ps, slot, 2*slot - 1} {
		b[off] = 0x77
	}
	s.Release(a+1, 2*ps) // whole OS pages: page 1
	assert.Equal(t, byte(0x77), b[0])
	assert.Zero(t, b[ps])
	assert.Zero(t, v.Bytes(ps, 1)[0], "released in every process")

	require.NoError(t, s.Truncate(a, 2*slot, slot))
	assert.Zero(t, v.Bytes(2*slot-1, 1)[0], "a truncated tail is given back")
	require.NoError(t, s.Unmap(a, slot))
	assert.Zero(t, v.Bytes(0, 1)[0], "an unmapped mapping is given back")
	assert.Zero(t, b[0])
}

func TestCreateSharedOnDevShm(t *testing.T) {
	path := shmPath(t)
	s, err := storage.CreateShared(path, 2*slot)
	require.NoError(t, err)
	defer func() { assert.NoError(t, s.Close()) }()
	assert.Contains(t, s.String(), "shared "+path+" 0x")
	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, int64(2*slot), fi.Size())

	_, err = storage.CreateShared(path, 2*slot)
	require.Error(t, err, "the file exists")

	a := mustMap(t, s, slot)
	copy(bytesAt(a, 3), "abc")
	v, err := storage.AttachShared(path)
	require.NoError(t, err)
	assert.Equal(t, "abc", string(v.Bytes(s.Offset(a), 3)))
	require.NoError(t, v.Close())
	require.NoError(t, v.Close(), "closing twice does nothing")
	require.NoError(t, s.Unmap(a, slot))

	_, err = storage.AttachShared(path + ".missing")
	require.Error(t, err)
}

func TestAttachFileAt(t *testing.T) {
	s := newMemfd(t, 2*slot)
	a := mustMap(t, s, slot)
	defer func() { require.NoError(t, s.Unmap(a, slot)) }()
	copy(bytesAt(a, 2), "ok")

	dup := func() *os.File {
		fd, err := syscall.Dup(int(s.Fd()))
		require.NoError(t, err)
		return os.NewFile(uintptr(fd), "dup")
	}
	f := dup()
	_, err := storage.AttachFileAt(f, s.Addr())
	require.Error(t, err, "the owner's mapping is in the way")
	// EEXIST, or, where MAP_FIXED_NOREPLACE is only a hint (Linux before
	// 4.17, qemu-user 7), another address, which is given back.
	assert.Regexp(t, "already in use|the address is in use", err.Error())
	_, err = storage.AttachFileAt(f, s.Addr()+1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a 2 MiB-aligned address")
	require.NoError(t, f.Close())

	// A free, aligned range: map one and give it back.
	p, err := chunk.Map(2*slot, chunk.Size)
	require.NoError(t, err)
	require.NoError(t, chunk.Unmap(p, 2*slot))
	v, err := storage.AttachFileAt(dup(), uintptr(p))
	require.NoError(t, err)
	defer func() { assert.NoError(t, v.Close()) }()
	assert.Equal(t, uintptr(p), v.Addr())
	assert.Equal(t, "ok", string(v.Bytes(s.Offset(a), 2)))
}

// The child process side: ZMM_STORAGE_CHILD names the message's offset
// and length and the reply's offset; the memfd is descriptor 3.
const childEnv = "ZMM_STORAGE_CHILD"

// TestSharedChild runs only as the child of TestSharedAcrossProcesses.
func TestSharedChild(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("run by TestSharedAcrossProcesses in a subprocess")
	}
	var msgOff, msgLen, replyOff, ownerAddr uintptr
	_, err := fmt.Sscanf(spec, "%d %d %d %d", &msgOff, &msgLen, &replyOff, &ownerAddr)
	require.NoError(t, err)
	f := os.NewFile(3, "memfd")
	// Try the owner's address first; any free address will do.
	v, err := storage.AttachFileAt(f, ownerAddr)
	same := err == nil
	if !same {
		t.Logf("cannot attach at the owner's address (%v); attaching anywhere", err)
		v, err = storage.AttachFile(f)
		require.NoError(t, err)
	}
	defer v.Close()
	msg := string(v.Bytes(msgOff, msgLen))
	copy(v.Bytes(replyOff, 64), fmt.Sprintf("child read %q, same address %v", msg, same))
}

// runChild runs TestSharedChild in a child process and returns its output.
func runChild(t *testing.T, env string, files ...*os.File) []byte {
	t.Helper()
	out, err := childtest.Run(t, "TestSharedChild", []string{env}, files)
	require.NoError(t, err, "child output:\n%s", out)
	return out
}

func TestSharedAcrossProcesses(t *testing.T) {
	s := newMemfd(t, 4*slot)
	a := mustMap(t, s, slot)
	defer func() { require.NoError(t, s.Unmap(a, slot)) }()
	msg := "hello from the owner"
	copy(s.Bytes(s.Offset(a+4096), uintptr(len(msg))), msg)
	reply := a + 8192
	out := runChild(t, fmt.Sprintf("%s=%d %d %d %d", childEnv, s.Offset(a+4096), len(msg), s.Offset(reply), s.Addr()), s.File())
	t.Logf("child: %s", out)
	got := string(bytesAt(reply, 64))
	got = got[:strings.IndexByte(got+"\x00", 0)]
	t.Logf("reply: %s", got)
	assert.Contains(t, got, `child read "hello from the owner"`, "child output:\n%s", out)
}
