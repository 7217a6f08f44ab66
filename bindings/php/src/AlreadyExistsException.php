<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::ALREADY_EXISTS. */
class AlreadyExistsException extends FfiException
{
    protected const STATUS = Status::ALREADY_EXISTS;
}
