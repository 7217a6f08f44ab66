<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::NOT_FOUND. */
class NotFoundException extends FfiException
{
    protected const STATUS = Status::NOT_FOUND;
}
