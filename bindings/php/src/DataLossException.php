<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Status::DATA_LOSS. */
class DataLossException extends FfiException
{
    protected const STATUS = Status::DATA_LOSS;
}
