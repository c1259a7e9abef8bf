package main

import (
	"fmt"
	"strings"
)

// count writes n and the noun, plural unless n is one: count(1, "request")
// is "1 request", count(2, "mismatch") "2 mismatches". Every noun zmmstat
// counts takes -s or -es.
func count(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %s", n, plural(noun))
}

// plural is the plural of a noun phrase whose last word takes -s or -es.
func plural(noun string) string {
	for _, end := range []string{"s", "x", "z", "ch", "sh"} {
		if strings.HasSuffix(noun, end) {
			return noun + "es"
		}
	}
	return noun + "s"
}
