<?php

declare(strict_types=1);

namespace Hms\Ffi;

/**
 * Status codes: the gRPC canonical codes with their pinned values, as in include/hms_ffi/hms_ffi.h.
 * They are pinned by the header ("never renumbered"); tests/StatusTest.php checks every constant here
 * against the generated FFI header and hms_status_str(), so they cannot drift silently.
 */
final class Status
{
    public const OK = 0;
    public const CANCELLED = 1;
    public const UNKNOWN = 2;
    public const INVALID_ARGUMENT = 3;
    public const DEADLINE_EXCEEDED = 4;
    public const NOT_FOUND = 5;
    public const ALREADY_EXISTS = 6;
    public const PERMISSION_DENIED = 7;
    public const RESOURCE_EXHAUSTED = 8;
    public const FAILED_PRECONDITION = 9;
    public const ABORTED = 10;
    public const OUT_OF_RANGE = 11;
    public const UNIMPLEMENTED = 12;
    public const INTERNAL = 13;
    public const UNAVAILABLE = 14;
    public const DATA_LOSS = 15;
    public const UNAUTHENTICATED = 16;

    /** The canonical name of a code ("NOT_FOUND"), or "UNRECOGNIZED_STATUS" like hms_status_str(). */
    public static function name(int $code): string
    {
        static $names = null;
        $names ??= array_flip((new \ReflectionClass(self::class))->getConstants());
        return $names[$code] ?? 'UNRECOGNIZED_STATUS';
    }

    /** @return array<string, int> every name => code */
    public static function all(): array
    {
        return (new \ReflectionClass(self::class))->getConstants();
    }
}
