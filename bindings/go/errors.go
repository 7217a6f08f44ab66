package hms

/*
#include <hms_ffi/hms_ffi.h>
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
)

// Code is a status code: the gRPC canonical codes with their gRPC values (hms_status_t).
type Code int32

const (
	OK                 Code = C.HMS_OK
	Cancelled          Code = C.HMS_CANCELLED
	Unknown            Code = C.HMS_UNKNOWN
	InvalidArgument    Code = C.HMS_INVALID_ARGUMENT
	DeadlineExceeded   Code = C.HMS_DEADLINE_EXCEEDED
	NotFound           Code = C.HMS_NOT_FOUND
	AlreadyExists      Code = C.HMS_ALREADY_EXISTS
	PermissionDenied   Code = C.HMS_PERMISSION_DENIED
	ResourceExhausted  Code = C.HMS_RESOURCE_EXHAUSTED
	FailedPrecondition Code = C.HMS_FAILED_PRECONDITION
	Aborted            Code = C.HMS_ABORTED
	OutOfRange         Code = C.HMS_OUT_OF_RANGE
	Unimplemented      Code = C.HMS_UNIMPLEMENTED
	Internal           Code = C.HMS_INTERNAL
	Unavailable        Code = C.HMS_UNAVAILABLE
	DataLoss           Code = C.HMS_DATA_LOSS
	Unauthenticated    Code = C.HMS_UNAUTHENTICATED
)

// String returns the canonical name ("NOT_FOUND") from hms_status_str.
func (c Code) String() string { return C.GoString(C.hms_status_str(C.hms_status_t(c))) }

// sentinel is what the Err* variables are: errors.Is(err, ErrX) holds when err is (or wraps) an
// *Error whose Code is X.
type sentinel struct{ code Code }

func (s *sentinel) Error() string { return "hms: " + s.code.String() }

// Sentinels for errors.Is, one per non-OK status code.
var (
	ErrCancelled          error = &sentinel{Cancelled}
	ErrUnknown            error = &sentinel{Unknown}
	ErrInvalidArgument    error = &sentinel{InvalidArgument}
	ErrDeadlineExceeded   error = &sentinel{DeadlineExceeded}
	ErrNotFound           error = &sentinel{NotFound}
	ErrAlreadyExists      error = &sentinel{AlreadyExists}
	ErrPermissionDenied   error = &sentinel{PermissionDenied}
	ErrResourceExhausted  error = &sentinel{ResourceExhausted}
	ErrFailedPrecondition error = &sentinel{FailedPrecondition}
	ErrAborted            error = &sentinel{Aborted}
	ErrOutOfRange         error = &sentinel{OutOfRange}
	ErrUnimplemented      error = &sentinel{Unimplemented}
	ErrInternal           error = &sentinel{Internal}
	ErrUnavailable        error = &sentinel{Unavailable}
	ErrDataLoss           error = &sentinel{DataLoss}
	ErrUnauthenticated    error = &sentinel{Unauthenticated}
)

var sentinels = []error{nil, ErrCancelled, ErrUnknown, ErrInvalidArgument, ErrDeadlineExceeded, ErrNotFound,
	ErrAlreadyExists, ErrPermissionDenied, ErrResourceExhausted, ErrFailedPrecondition, ErrAborted,
	ErrOutOfRange, ErrUnimplemented, ErrInternal, ErrUnavailable, ErrDataLoss, ErrUnauthenticated}

// Sentinel returns the Err* variable of a code (nil for OK and for codes outside the table).
func Sentinel(c Code) error {
	if c <= 0 || int(c) >= len(sentinels) {
		return nil
	}
	return sentinels[c]
}

// Error is a failed call or operation.
type Error struct {
	Code    Code
	Message string
	// Remote is true when the peer raised the error (its handler or its dispatcher), false when it
	// was raised in this process (bad argument, connection lost, deadline here, ...).
	Remote bool
	// Details are the error details a remote handler attached (possibly empty), of DetailsType.
	Details     []byte
	DetailsType ContentType
	// OSErrno is the errno of the failing system call, 0 when none.
	OSErrno int
	cause   error // e.g. context.Canceled when a context ended the call
}

// Errorf builds an error for a handler to return: the caller receives this code and message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	origin := "local"
	if e.Remote {
		origin = "remote"
	}
	if e.Message == "" {
		return fmt.Sprintf("hms: %s (%s)", e.Code, origin)
	}
	return fmt.Sprintf("hms: %s (%s): %s", e.Code, origin, e.Message)
}

// Is makes errors.Is(err, hms.ErrNotFound) true for an *Error with Code NotFound.
func (e *Error) Is(target error) bool {
	s, ok := target.(*sentinel)
	return ok && s.code == e.Code
}

// Unwrap returns the cause, e.g. context.Canceled or context.DeadlineExceeded when a context ended
// the call.
func (e *Error) Unwrap() error { return e.cause }

// CodeOf returns the status code of err: OK for nil, the code of an *Error (or a wrapped sentinel),
// Cancelled / DeadlineExceeded for context errors, Unknown otherwise.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var s *sentinel
	if errors.As(err, &s) {
		return s.code
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return Cancelled
	}
	return Unknown
}

// errorFrom turns a C status and hms_error_t into a Go error (nil for HMS_OK).
func errorFrom(st C.hms_status_t, e *C.hms_error_t) error {
	if st == C.HMS_OK {
		return nil
	}
	err := &Error{Code: Code(st)}
	if e != nil {
		err.Message = C.GoString(&e.message[0])
		err.Remote = e.origin == C.HMS_ORIGIN_REMOTE
		err.OSErrno = int(e.os_errno)
	}
	return err
}
