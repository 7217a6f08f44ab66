// Package hms is the Go binding of hms-ffi-native: cross-process calls, streams and
// publish/subscribe over shared-memory rings on one host, through the C ABI of
// include/hms_ffi/hms_ffi.h (libhms_ffi, found with pkg-config).
//
// Handles (Node, Client, Stream, Publisher, Subscription) are closed with Close; finalizers only
// back that up. Errors are *Error values wrapping a status Code, so errors.Is(err, hms.ErrNotFound)
// works for every status code.
//
// Threading: handlers of a Node run on the node's dispatcher thread — the OS thread that runs
// Node.Serve (or the goroutine started by Node.Start), locked to that goroutine for the whole
// dispatch loop. Handlers therefore run one at a time, in order, and a slow handler delays every
// other call to that node; hand long work to other goroutines and reply from the handler only when it
// is done, or use several nodes. A handler may use any Go feature (channels, goroutines, blocking
// I/O), but blocking in it blocks the dispatcher. A panic in a handler is recovered and becomes an
// INTERNAL error reply; the server keeps running.
package hms

/*
#cgo pkg-config: hms_ffi
#include <stdlib.h>
#include <hms_ffi/hms_ffi.h>
*/
import "C"

import (
	"fmt"
	"sync"
)

// HeaderABIVersion is HMS_FFI_ABI_VERSION of the header this package was compiled against.
const HeaderABIVersion = uint32(C.HMS_FFI_ABI_VERSION)

// Version is the package version of the header ("MAJOR.MINOR.PATCH").
var Version = fmt.Sprintf("%d.%d.%d", C.HMS_FFI_VERSION_MAJOR, C.HMS_FFI_VERSION_MINOR, C.HMS_FFI_VERSION_PATCH)

// LibraryABIVersion returns hms_abi_version() of the loaded libhms_ffi.
func LibraryABIVersion() uint32 { return uint32(C.hms_abi_version()) }

// LibraryVersion returns hms_version_string() of the loaded libhms_ffi.
func LibraryVersion() string { return C.GoString(C.hms_version_string()) }

var (
	abiOnce sync.Once
	abiErr  error
)

// CheckABI compares the loaded library's ABI version with the header's. OpenNode calls it, so a
// mismatched library is refused before any handle exists.
func CheckABI() error {
	abiOnce.Do(func() { abiErr = checkABI(LibraryABIVersion(), HeaderABIVersion) })
	return abiErr
}

func checkABI(lib, header uint32) error {
	if lib == header {
		return nil
	}
	return &Error{Code: FailedPrecondition, Message: fmt.Sprintf(
		"libhms_ffi has ABI version %d but this Go package was built against hms_ffi.h ABI version %d: "+
			"rebuild the Go program against the installed library (PKG_CONFIG_PATH=$(hms-ffi --pkgconfig-dir))",
		lib, header)}
}
