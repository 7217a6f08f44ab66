<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::ABORTED. */
class AbortedException extends FfiException
{
    protected const STATUS = Status::ABORTED;
}
