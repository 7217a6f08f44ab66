<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::UNAUTHENTICATED. */
class UnauthenticatedException extends FfiException
{
    protected const STATUS = Status::UNAUTHENTICATED;
}
