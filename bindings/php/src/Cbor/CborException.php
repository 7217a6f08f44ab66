<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/**
 * Malformed, hostile or unsupported CBOR, or a PHP value CBOR cannot carry. An InvalidArgument error:
 * a handler that lets it escape answers INVALID_ARGUMENT, which is what the caller did wrong.
 */
class CborException extends \Hms\Ffi\InvalidArgumentException
{
}
