// Command mkbins writes bins/table.go, the table of zmm's small size
// classes. It is run by go generate in the bins directory; the derivation
// lives in package bintable.
package main

import (
	"flag"
	"log"
	"os"

	"github.com/gozmm/zmm/bins/internal/bintable"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("mkbins: ")
	out := flag.String("o", "table.go", "output file")
	flag.Parse()

	src, err := bintable.Source()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
}
