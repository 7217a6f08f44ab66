<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/**
 * A CBOR byte string. PHP strings carry both text and bytes; plain PHP strings are encoded as CBOR
 * text (they must be UTF-8) and byte strings are wrapped in Bytes, so the two never get mixed up.
 * At the call level a Bytes value is sent as a raw payload (no CBOR at all), as Python does with bytes.
 */
final class Bytes implements \Stringable
{
    public function __construct(public readonly string $data)
    {
    }

    public function __toString(): string
    {
        return $this->data;
    }
}
