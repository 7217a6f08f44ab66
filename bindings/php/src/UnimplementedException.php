<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::UNIMPLEMENTED. */
class UnimplementedException extends FfiException
{
    protected const STATUS = Status::UNIMPLEMENTED;
}
