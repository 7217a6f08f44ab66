<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::CANCELLED. */
class CancelledException extends FfiException
{
    protected const STATUS = Status::CANCELLED;
}
