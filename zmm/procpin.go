package zmm

import _ "unsafe" // for go:linkname

// procPin pins the calling goroutine to its P and returns the P's id;
// procUnpin undoes it. While pinned the goroutine is not preempted and no
// other goroutine runs on that P, so state owned by the P can be used
// without a lock or an atomic read-modify-write; a stop-the-world (which
// the Shared allocator's stop uses) waits until every pinned section has
// ended. sync.Pool is built on the same pair. The runtime keeps both on
// its list of linknamed symbols it promises not to break.
//
// While pinned, code must not block: no mutex, no channel, no syscall that
// the runtime may hand the P off from (a goroutine that comes back from
// one may find itself on another P), no panic (nothing would unpin).

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()
