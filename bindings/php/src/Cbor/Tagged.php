<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/** A CBOR tag this codec has no PHP type for (anything but 0, 1 and 258): kept as tag + value. */
final class Tagged
{
    public function __construct(public readonly int $tag, public readonly mixed $value)
    {
        if ($tag < 0) {
            throw new CborException("a CBOR tag number is unsigned, got $tag");
        }
    }
}
