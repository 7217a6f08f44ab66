<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::INTERNAL. */
class InternalException extends FfiException
{
    protected const STATUS = Status::INTERNAL;
}
