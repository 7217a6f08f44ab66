<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::OUT_OF_RANGE. */
class OutOfRangeException extends FfiException
{
    protected const STATUS = Status::OUT_OF_RANGE;
}
