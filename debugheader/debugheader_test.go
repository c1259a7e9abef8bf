package debugheader_test

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gozmm/zmm/debugheader"
)

const key = uintptr(0x0123456789abcdef)

// newBlock returns an 8-byte aligned buffer of n bytes and its start.
func newBlock(n uintptr) ([]byte, unsafe.Pointer) {
	words := make([]uint64, (n+7)/8)
	p := unsafe.Pointer(unsafe.SliceData(words))
	return unsafe.Slice((*byte)(p), n), p
}

// blockSizes are (requested size, block capacity) pairs: capacities as
// debug mode makes them (class sizes of size+Overhead) and a few with room
// to spare.
var blockSizes = [][2]uintptr{{0, 40}, {1, 48}, {7, 48}, {8, 48}, {9, 56}, {24, 64}, {100, 160}, {100, 4096}, {3032, 3072}}

func TestConstants(t *testing.T) {
	assert.Equal(t, uintptr(32), debugheader.Size)
	assert.Equal(t, uintptr(40), debugheader.Overhead)
	assert.Equal(t, debugheader.Size, unsafe.Sizeof(debugheader.Record{}))
}

func TestWriteCheckRoundTrip(t *testing.T) {
	for _, bs := range blockSizes {
		size, cap := bs[0], bs[1]
		buf, block := newBlock(cap)
		for i := range buf {
			buf[i] = 0x55
		}
		debugheader.Write(key, block, cap, size, 0x401000, 0x402000)
		r := debugheader.At(block)
		assert.Equal(t, uint64(size), r.Size)
		assert.Equal(t, uint64(0x401000), r.Site)
		assert.Equal(t, uint64(0x402000), r.Orig)
		assert.Equal(t, unsafe.Add(block, 32), debugheader.User(block))
		assert.Equal(t, block, debugheader.Block(debugheader.User(block)))

		dmg, ok := debugheader.Check(key, block, cap)
		assert.True(t, ok, "size %d cap %d", size, cap)
		assert.Equal(t, debugheader.Damage{}, dmg)

		// The user's bytes are not part of the canaries.
		user := buf[32 : 32+size]
		for i := range user {
			user[i] = ^user[i]
		}
		_, ok = debugheader.Check(key, block, cap)
		assert.True(t, ok, "writing the user's bytes is fine")
		// Nor are Site and Orig.
		r.Site, r.Orig = 1, 2
		_, ok = debugheader.Check(key, block, cap)
		assert.True(t, ok)

		// The tail canary is never zero, so a zeroed tail is caught.
		for _, b := range buf[32+size:] {
			assert.NotZero(t, b)
		}
	}
}

func TestEveryHeadGuardByteIsChecked(t *testing.T) {
	for _, bs := range blockSizes {
		size, cap := bs[0], bs[1]
		buf, block := newBlock(cap)
		debugheader.Write(key, block, cap, size, 1, 0)
		for i := 24; i < 32; i++ { // the Guard word, right before the user's bytes
			for _, x := range []byte{0x01, 0x80, 0xFF} {
				buf[i] ^= x
				dmg, ok := debugheader.Check(key, block, cap)
				assert.False(t, ok, "size %d: byte %d ^ %#x", size, i, x)
				assert.Equal(t, debugheader.Damage{Before: true, Size: size}, dmg, "size %d: byte %d", size, i)
				assert.Equal(t, "the guard before the block was overwritten (a write before its start)", dmg.String())
				buf[i] ^= x
			}
		}
		_, ok := debugheader.Check(key, block, cap)
		assert.True(t, ok)
	}
}

func TestEveryTailByteIsChecked(t *testing.T) {
	for _, bs := range blockSizes {
		size, cap := bs[0], bs[1]
		buf, block := newBlock(cap)
		debugheader.Write(key, block, cap, size, 1, 0)
		for off := size; off < cap-32; off++ {
			i := 32 + off
			for _, x := range []byte{0x01, 0xFF} {
				buf[i] ^= x
				dmg, ok := debugheader.Check(key, block, cap)
				assert.False(t, ok, "size %d: offset %d", size, off)
				assert.Equal(t, debugheader.Damage{Offset: off, Size: size}, dmg, "size %d: offset %d", size, off)
				buf[i] ^= x
			}
		}
		// The first damaged byte is reported.
		buf[32+size+3] ^= 1
		buf[32+size+1] ^= 1
		dmg, _ := debugheader.Check(key, block, cap)
		assert.Equal(t, size+1, dmg.Offset)
		assert.Equal(t, fmt.Sprintf("a write 2 byte(s) past its end (at offset %d of a %d-byte block)", size+1, size), dmg.String())
	}
}

func TestDamageString(t *testing.T) {
	assert.Equal(t, "a write 1 byte(s) past its end (at offset 100 of a 100-byte block)",
		debugheader.Damage{Offset: 100, Size: 100}.String())
	assert.Equal(t, "a write 8 byte(s) past its end (at offset 7 of a 0-byte block)",
		debugheader.Damage{Offset: 7, Size: 0}.String())
	assert.Equal(t, "the guard before the block was overwritten (a write before its start)",
		debugheader.Damage{Before: true, Size: 5}.String())
}

func TestCheckRejectsForeignAndImplausibleRecords(t *testing.T) {
	buf, block := newBlock(160)
	debugheader.Write(key, block, 160, 100, 1, 0)

	dmg, ok := debugheader.Check(key^1, block, 160)
	assert.False(t, ok, "another heap's key")
	assert.True(t, dmg.Before)

	// A copy of the block elsewhere does not pass: the canaries depend on
	// the address.
	buf2, block2 := newBlock(160)
	copy(buf2, buf)
	_, ok = debugheader.Check(key, block2, 160)
	assert.False(t, ok)

	// A Size larger than the block holds is a damaged head.
	debugheader.At(block).Size = 121
	dmg, ok = debugheader.Check(key, block, 160)
	assert.False(t, ok)
	assert.Equal(t, debugheader.Damage{Before: true, Size: 121}, dmg)
	debugheader.At(block).Size = 1 << 40
	dmg, ok = debugheader.Check(key, block, 160)
	assert.False(t, ok)
	assert.Equal(t, debugheader.Damage{Before: true, Size: 160}, dmg, "the size is clamped to the block")

	// A Size changed within the block moves where the tail is expected.
	debugheader.At(block).Size = 99
	dmg, ok = debugheader.Check(key, block, 160)
	assert.False(t, ok)
	assert.False(t, dmg.Before)
	assert.Equal(t, uintptr(99), dmg.Size)

	// Zeroed memory is not a valid block.
	_, zero := newBlock(160)
	_, ok = debugheader.Check(key, zero, 160)
	assert.False(t, ok)
}

func TestFillAndCheckFill(t *testing.T) {
	for _, cap := range []uintptr{40, 48, 160, 3072} {
		buf, block := newBlock(cap)
		for i := range buf {
			buf[i] = byte(i)
		}
		debugheader.Fill(block, cap)
		for i := range buf {
			if i < debugheader.FreeFillFrom {
				require.Equal(t, byte(i), buf[i], "the first %d bytes are kept", debugheader.FreeFillFrom)
			} else {
				require.Equal(t, byte(debugheader.FreeFill), buf[i])
			}
		}
		_, bad := debugheader.CheckFill(block, cap)
		assert.False(t, bad)

		for i := uintptr(0); i < cap; i++ {
			buf[i] ^= 0x20
			at, bad := debugheader.CheckFill(block, cap)
			if i < debugheader.FreeFillFrom {
				assert.False(t, bad, "byte %d is not part of the fill", i)
			} else {
				assert.True(t, bad, "byte %d", i)
				assert.Equal(t, i, at)
			}
			buf[i] ^= 0x20
		}
		buf[cap-1], buf[debugheader.FreeFillFrom+3] = 0, 0
		at, bad := debugheader.CheckFill(block, cap)
		assert.True(t, bad)
		assert.Equal(t, uintptr(debugheader.FreeFillFrom+3), at, "the first changed byte")
	}
}
