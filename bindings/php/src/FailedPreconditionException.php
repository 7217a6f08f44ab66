<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::FAILED_PRECONDITION. */
class FailedPreconditionException extends FfiException
{
    protected const STATUS = Status::FAILED_PRECONDITION;
}
