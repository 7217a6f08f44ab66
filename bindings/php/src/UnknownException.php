<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::UNKNOWN. */
class UnknownException extends FfiException
{
    protected const STATUS = Status::UNKNOWN;
}
