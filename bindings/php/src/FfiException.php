<?php

declare(strict_types=1);

namespace Hms\Ffi;

/**
 * Every error of the binding: a status code (Status::*), a message that says what happened and what
 * to do next, whether the peer raised it (isRemote()), optional details sent by the peer, and the OS
 * errno when a system call failed. One subclass per status code (NotFoundException, ...), so callers
 * catch what they can handle. getCode() is the status code too.
 *
 * Thrown from a handler, the status code and message (and details, CBOR-encoded) become the error the
 * caller receives; any other Throwable becomes INTERNAL.
 */
class FfiException extends \RuntimeException
{
    /** @var array<int, class-string<FfiException>> */
    private const CLASSES = [
        Status::CANCELLED => CancelledException::class,
        Status::UNKNOWN => UnknownException::class,
        Status::INVALID_ARGUMENT => InvalidArgumentException::class,
        Status::DEADLINE_EXCEEDED => DeadlineExceededException::class,
        Status::NOT_FOUND => NotFoundException::class,
        Status::ALREADY_EXISTS => AlreadyExistsException::class,
        Status::PERMISSION_DENIED => PermissionDeniedException::class,
        Status::RESOURCE_EXHAUSTED => ResourceExhaustedException::class,
        Status::FAILED_PRECONDITION => FailedPreconditionException::class,
        Status::ABORTED => AbortedException::class,
        Status::OUT_OF_RANGE => OutOfRangeException::class,
        Status::UNIMPLEMENTED => UnimplementedException::class,
        Status::INTERNAL => InternalException::class,
        Status::UNAVAILABLE => UnavailableException::class,
        Status::DATA_LOSS => DataLossException::class,
        Status::UNAUTHENTICATED => UnauthenticatedException::class,
    ];

    /** The status of the class (subclasses), UNKNOWN for FfiException itself. */
    protected const STATUS = Status::UNKNOWN;

    private readonly int $status;

    /**
     * @param int|null $status  defaults to the class's code (NotFoundException: NOT_FOUND)
     * @param mixed    $details sent to the caller CBOR-encoded when thrown from a handler
     */
    public function __construct(
        string $message = '',
        ?int $status = null,
        private readonly bool $remote = false,
        private readonly mixed $details = null,
        private readonly int $osErrno = 0,
        ?\Throwable $previous = null,
    ) {
        $this->status = $status ?? static::STATUS;
        parent::__construct($message, $this->status, $previous);
    }

    /** The exception for a status code: the subclass named after it (FfiException for unknown codes). */
    public static function fromStatus(int $status, string $message, bool $remote = false, mixed $details = null, int $osErrno = 0): self
    {
        $class = self::CLASSES[$status] ?? self::class;
        return new $class($message, $status, $remote, $details, $osErrno);
    }

    /** @return class-string<FfiException> */
    public static function classFor(int $status): string
    {
        return self::CLASSES[$status] ?? self::class;
    }

    public function getStatus(): int
    {
        return $this->status;
    }

    /** "NOT_FOUND", ... */
    public function getStatusName(): string
    {
        return Status::name($this->status);
    }

    /** True when the peer (its handler or its dispatcher) raised the error, false when raised here. */
    public function isRemote(): bool
    {
        return $this->remote;
    }

    /** The details the peer sent (decoded from CBOR/JSON; Bytes for raw), or the details given. */
    public function getDetails(): mixed
    {
        return $this->details;
    }

    public function getOsErrno(): int
    {
        return $this->osErrno;
    }
}
