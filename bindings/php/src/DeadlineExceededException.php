<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::DEADLINE_EXCEEDED. */
class DeadlineExceededException extends FfiException
{
    protected const STATUS = Status::DEADLINE_EXCEEDED;
}
