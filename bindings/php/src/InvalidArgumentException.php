<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::INVALID_ARGUMENT. */
class InvalidArgumentException extends FfiException
{
    protected const STATUS = Status::INVALID_ARGUMENT;
}
