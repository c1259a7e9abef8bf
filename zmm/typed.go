package zmm

import (
	"fmt"
	"reflect"
	"sync"
	"unsafe"
)

// Typed helpers. A block holds plain bytes, invisible to the garbage
// collector, so a T stored in one must not contain Go pointers: no
// pointers, strings, slices, maps, channels, functions, interfaces or
// unsafe.Pointers, at any depth. Every helper checks T once per type (the
// result is cached) and panics with a message naming the type and the
// offending field otherwise. uintptr fields are allowed: an address kept as
// a number is the caller's business.
//
// What a helper returns points into the heap: it is valid until it is
// freed, or the heap is Reset or Closed.

var pointerFreeTypes sync.Map // reflect.Type → the refusal's message ("" when the type is fine)

// checkPointerFree panics with a *Error (ErrGoPointer) naming the field if
// T contains Go pointers. op is the helper that asks.
func checkPointerFree[T any](op string) {
	t := reflect.TypeFor[T]()
	v, ok := pointerFreeTypes.Load(t)
	if !ok {
		var msg string
		if where, kind := findPointer(t, t.String()); where != "" {
			msg = fmt.Sprintf("zmm: type %v cannot live in zmm memory: %s is %s, a Go pointer the garbage collector would not see", t, where, kind)
		}
		v, _ = pointerFreeTypes.LoadOrStore(t, msg)
	}
	if msg := v.(string); msg != "" {
		panic(&Error{Kind: ErrGoPointer, Op: op, Msg: msg})
	}
}

var pointerKinds = map[reflect.Kind]string{
	reflect.Pointer: "a pointer", reflect.String: "a string", reflect.Slice: "a slice",
	reflect.Map: "a map", reflect.Chan: "a channel", reflect.Func: "a func",
	reflect.Interface: "an interface", reflect.UnsafePointer: "an unsafe.Pointer",
}

// findPointer returns the path and kind of the first part of t that holds a
// Go pointer, or "".
func findPointer(t reflect.Type, path string) (string, string) {
	switch t.Kind() {
	case reflect.Pointer, reflect.String, reflect.Slice, reflect.Map, reflect.Chan,
		reflect.Func, reflect.Interface, reflect.UnsafePointer:
		return path, pointerKinds[t.Kind()]
	case reflect.Array:
		if t.Len() == 0 {
			return "", ""
		}
		return findPointer(t.Elem(), path+"[0]")
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if where, kind := findPointer(f.Type, path+"."+f.Name); where != "" {
				return where, kind
			}
		}
	}
	return "", ""
}

// Allocator is what the typed helpers allocate from: a *Heap or a *Shared.
type Allocator interface {
	*Heap | *Shared
	Alloc(size uintptr) unsafe.Pointer
	Calloc(n, size uintptr) unsafe.Pointer
	Realloc(p unsafe.Pointer, size uintptr) unsafe.Pointer
	Free(p unsafe.Pointer)
	AllocBytes(n int) []byte
}

// AllocOf returns a new zeroed T in h (ecalloc of one T).
func AllocOf[T any, A Allocator](h A) *T {
	checkPointerFree[T]("AllocOf")
	var zero T
	return (*T)(h.Calloc(1, unsafe.Sizeof(zero)))
}

// FreeOf frees a T that AllocOf returned.
func FreeOf[T any, A Allocator](h A, p *T) {
	h.Free(unsafe.Pointer(p))
}

// MakeSlice returns a zeroed slice of T with length n and capacity c in h
// (c below n is taken as n). The element count is checked for overflow.
// A capacity of 0 gives an empty slice that owns no block.
func MakeSlice[T any, A Allocator](h A, n, c int) []T {
	checkPointerFree[T]("MakeSlice")
	if n < 0 || c < 0 {
		fail(ErrOverflow, "MakeSlice", 0, "zmm: MakeSlice of negative length %d or capacity %d", n, c)
	}
	c = max(c, n)
	if c == 0 {
		// No block: FreeSlice and GrowSlice take a slice of capacity 0
		// to own none, as for nil.
		return []T{}
	}
	var zero T
	p := h.Calloc(uintptr(c), unsafe.Sizeof(zero))
	return unsafe.Slice((*T)(p), c)[:n]
}

// GrowSlice returns s with room for at least c elements, moved if need be
// (erealloc): the elements up to len(s) are kept, the new room is zeroed.
// s must be a slice that MakeSlice or GrowSlice returned, or nil.
func GrowSlice[T any, A Allocator](h A, s []T, c int) []T {
	checkPointerFree[T]("GrowSlice")
	if c <= cap(s) {
		return s
	}
	var zero T
	size := unsafe.Sizeof(zero)
	bytes := safeSize("GrowSlice", uintptr(c), size, 0)
	var p unsafe.Pointer
	if cap(s) == 0 {
		p = h.Alloc(bytes)
	} else {
		p = h.Realloc(unsafe.Pointer(unsafe.SliceData(s)), bytes)
	}
	out := unsafe.Slice((*T)(p), c)
	clear(out[len(s):])
	return out[:len(s)]
}

// FreeSlice frees a slice that MakeSlice or GrowSlice returned.
func FreeSlice[T any, A Allocator](h A, s []T) {
	if cap(s) == 0 {
		return
	}
	h.Free(unsafe.Pointer(unsafe.SliceData(s)))
}

// CopyString copies s into h and returns a string that uses the copy. The
// result must not be used after FreeString, Reset or Close: it then points
// at memory that is gone or reused, and Go strings are assumed immutable.
func CopyString[A Allocator](h A, s string) string {
	if len(s) == 0 {
		return ""
	}
	p := h.Alloc(uintptr(len(s)))
	copy(unsafe.Slice((*byte)(p), len(s)), s)
	return unsafe.String((*byte)(p), len(s))
}

// CopyBytes copies b into h and returns the copy, of length len(b) and
// capacity the block's size: bytes.Clone into the heap. Free it with
// h.FreeBytes. The lifetime rule of CopyString applies. (To copy a string
// into a []byte of h, allocate with h.AllocBytes and copy.)
func CopyBytes[A Allocator](h A, b []byte) []byte {
	c := h.AllocBytes(len(b))
	copy(c, b)
	return c
}

// FreeString frees a string that CopyString returned. An empty string owns
// no block and is ignored.
func FreeString[A Allocator](h A, s string) {
	if len(s) == 0 {
		return
	}
	h.Free(unsafe.Pointer(unsafe.StringData(s)))
}
