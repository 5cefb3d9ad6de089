// Package configs holds passbridge's example configurations and the data of
// the embedded demo, compiled into the binary so that `passbridge run`
// needs no files.
package configs

import _ "embed"

// DemoLDIF is demo.ldif: the directory of the embedded demo (Northwind
// Fabrication). Its header comment lists the demo passwords.
//
//go:embed demo.ldif
var DemoLDIF []byte
