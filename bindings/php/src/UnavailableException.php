<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::UNAVAILABLE. */
class UnavailableException extends FfiException
{
    protected const STATUS = Status::UNAVAILABLE;
}
