// Package debugheader defines the debug record that zmm's debug mode keeps
// in every block, and the guard canaries around the user's bytes.
//
// A debug block looks like this (the Zend MM keeps its debug info in a
// trailer; zmm keeps it in front, so that the guard before the user's bytes
// is part of it):
//
//		block start                      user pointer               block end
//		│ Size │ Site │ Orig │ Guard     │ user bytes (Size) │ tail guard … │
//		  8      8      8      8 bytes                       ≥ TailSize bytes
//
//	  - Size is the requested size.
//	  - Site is the program counter of the allocation (or reallocation) site;
//	    it becomes file:line only when a report is written.
//	  - Orig is the site that first allocated the block, when it was since
//	    reallocated (the Zend MM's orig_filename/orig_lineno); 0 otherwise.
//	  - Guard is a canary right before the user's bytes, and the tail guard a
//	    canary pattern from the byte right after the requested size to the end
//	    of the block: writing one byte before the block or one byte past its
//	    requested size changes a canary.
//
// Canary values depend on a per-heap key and on the block's address, so a
// block copied elsewhere, or bytes from another heap, do not pass for valid.
// The record holds only integers: it lives in memory the GC does not scan.
package debugheader

import (
	"bytes"
	"fmt"
	"unsafe"
)

// Record is the debug record at the start of every debug block.
type Record struct {
	Size  uint64
	Site  uint64
	Orig  uint64
	Guard uint64
}

const (
	// Size is the bytes the record takes before the user's bytes.
	Size = unsafe.Sizeof(Record{})
	// TailSize is the least room a debug block keeps after the requested
	// size for the tail guard.
	TailSize = 8
	// Overhead is what debug mode adds to every request.
	Overhead = Size + TailSize
	// FreeFill is the byte freed debug blocks are filled with; a byte that
	// is no longer FreeFill when the block is handed out again, or at a
	// heap check, was written after the block was freed.
	FreeFill = 0xDF
	// FreeFillFrom is where the free fill starts: the first FreeFillFrom
	// bytes of a freed block keep its Size and Site (so reports about it can
	// name them) and the free-list link and check word.
	FreeFillFrom = 32
)

// guardOf is the head canary of the block at addr.
func guardOf(key, addr uintptr) uint64 {
	return uint64(key^addr) ^ 0x9E3779B97F4A7C15
}

// tailWord is the 64-bit value the tail canary bytes of the block at
// block are taken from: byte i of the tail is byte (a & 7) of it, where a is
// the byte's address, or'ed with 1 so that zeroed memory never passes for a
// tail guard.
func tailWord(key uintptr, block unsafe.Pointer) uint64 {
	return (uint64(key) ^ uint64(uintptr(block))) * 0x9E3779B97F4A7C15
}

func tailByte(w uint64, a uintptr) byte { return byte(w>>(8*(a&7))) | 1 }

// freeFill is a run of FreeFill bytes to copy from and compare with.
var freeFill = func() (b [4096]byte) {
	for i := range b {
		b[i] = FreeFill
	}
	return b
}()

// At returns the record of the block that starts at block.
func At(block unsafe.Pointer) *Record { return (*Record)(block) }

// User returns the user pointer of the block that starts at block.
func User(block unsafe.Pointer) unsafe.Pointer { return unsafe.Add(block, Size) }

// Block returns the start of the block whose user pointer is p.
func Block(p unsafe.Pointer) unsafe.Pointer { return unsafe.Add(p, -int(Size)) }

// Write initialises the record and both canaries of a block of capacity
// blockSize bytes that holds size user bytes.
func Write(key uintptr, block unsafe.Pointer, blockSize, size uintptr, site, orig uintptr) {
	r := At(block)
	r.Size = uint64(size)
	r.Site = uint64(site)
	r.Orig = uint64(orig)
	r.Guard = guardOf(key, uintptr(block))
	w := tailWord(key, block)
	start := uintptr(block) + Size + size
	tail := unsafe.Slice((*byte)(unsafe.Add(block, Size+size)), blockSize-Size-size)
	for i := range tail {
		tail[i] = tailByte(w, start+uintptr(i))
	}
}

// Damage describes a broken canary.
type Damage struct {
	// Before is true when the guard before the user's bytes was written.
	Before bool
	// Offset is, for a damaged tail, the offset of the first changed byte
	// from the user pointer (so Offset == Size is "1 byte past the end").
	Offset uintptr
	// Size is the requested size recorded in the block, as far as it could
	// be read.
	Size uintptr
}

func (d Damage) String() string {
	if d.Before {
		return "the guard before the block was overwritten (a write before its start)"
	}
	past := d.Offset - d.Size
	return fmt.Sprintf("a write %d byte(s) past its end (at offset %d of a %d-byte block)", past+1, d.Offset, d.Size)
}

// Check verifies both canaries of a live block of capacity blockSize. It
// returns the damage found, if any. A record whose Size cannot be right
// (larger than the block) counts as a damaged head.
func Check(key uintptr, block unsafe.Pointer, blockSize uintptr) (Damage, bool) {
	r := At(block)
	size := uintptr(r.Size)
	if r.Guard != guardOf(key, uintptr(block)) || size > blockSize-Overhead {
		return Damage{Before: true, Size: min(size, blockSize)}, false
	}
	w := tailWord(key, block)
	start := uintptr(block) + Size + size
	tail := unsafe.Slice((*byte)(unsafe.Add(block, Size+size)), blockSize-Size-size)
	for i, b := range tail {
		if b != tailByte(w, start+uintptr(i)) {
			return Damage{Offset: size + uintptr(i), Size: size}, false
		}
	}
	return Damage{}, true
}

// Fill marks a freed block: the bytes from FreeFillFrom to its end become
// FreeFill.
func Fill(block unsafe.Pointer, blockSize uintptr) {
	FillBytes(unsafe.Add(block, FreeFillFrom), blockSize-FreeFillFrom)
}

// CheckFill returns the offset from the block start of the first byte of a
// freed block that is no longer FreeFill, or false if the fill is intact.
func CheckFill(block unsafe.Pointer, blockSize uintptr) (uintptr, bool) {
	off, bad := CheckFillBytes(unsafe.Add(block, FreeFillFrom), blockSize-FreeFillFrom)
	return off + FreeFillFrom, bad
}

// FillBytes sets the n bytes at p to FreeFill: freed memory that has no
// record of its own, such as the part of a freed page run that stays free
// when the rest is handed out again.
func FillBytes(p unsafe.Pointer, n uintptr) {
	b := unsafe.Slice((*byte)(p), n)
	for len(b) > 0 {
		b = b[copy(b, freeFill[:]):]
	}
}

// CheckFillBytes returns the offset from p of the first of the n bytes at
// p that is not FreeFill, or false if all are.
func CheckFillBytes(p unsafe.Pointer, n uintptr) (uintptr, bool) {
	b := unsafe.Slice((*byte)(p), n)
	for off := uintptr(0); len(b) > 0; {
		k := min(len(b), len(freeFill))
		if !bytes.Equal(b[:k], freeFill[:k]) {
			for i, v := range b[:k] {
				if v != FreeFill {
					return off + uintptr(i), true
				}
			}
		}
		b, off = b[k:], off+uintptr(k)
	}
	return 0, false
}
