<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::RESOURCE_EXHAUSTED. */
class ResourceExhaustedException extends FfiException
{
    protected const STATUS = Status::RESOURCE_EXHAUSTED;
}
