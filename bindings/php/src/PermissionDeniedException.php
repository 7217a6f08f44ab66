<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::PERMISSION_DENIED. */
class PermissionDeniedException extends FfiException
{
    protected const STATUS = Status::PERMISSION_DENIED;
}
