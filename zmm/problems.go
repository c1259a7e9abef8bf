package zmm

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// What the checks and the leak report find, as values: Check returns the
// corruptions (Problem, in a *CheckError), Leaks the live blocks (Leak).

// Problem is one corruption found by Check.
type Problem struct {
	Addr uintptr // the block's (user) address
	Size uintptr // its requested size, as recorded
	Site Site    // where it was allocated
	What string  // what is wrong
}

func (p Problem) String() string {
	return fmt.Sprintf("block 0x%x (%d bytes, allocated at %v): %s", p.Addr, p.Size, p.Site, p.What)
}

// CheckError is what Check returns when it finds corruption. It wraps
// ErrCorrupted.
type CheckError struct {
	Problems []Problem
}

func (e *CheckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "zmm: heap check found %d problem(s):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *CheckError) Unwrap() error { return ErrCorrupted }

func checkResult(probs []Problem) error {
	if len(probs) == 0 {
		return nil
	}
	return &CheckError{Problems: probs}
}

// Leak is a block still live, as Leaks and the leak report list it.
type Leak struct {
	Addr uintptr // the block's (user) address
	Size uintptr // the requested size
	Site Site    // where it was allocated (or last reallocated)
	Orig Site    // where it was first allocated, if it was reallocated
}

// sortLeaks orders leaks by address.
func sortLeaks(l []Leak) {
	slices.SortFunc(l, func(a, b Leak) int { return cmp.Compare(a.Addr, b.Addr) })
}
