<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/**
 * An unsigned integer in [2^63, 2^64-1]: PHP's int is signed 64-bit and cannot hold it (DESIGN §8).
 *
 * The rule: a CBOR unsigned integer that fits PHP_INT_MAX decodes to int; from 2^63 up it decodes to
 * UInt64, which holds the value as a decimal string and re-encodes to the identical 9 bytes. To send
 * such a value, build one: `new UInt64('18446744073709551615')` (any value 0..2^64-1 is accepted;
 * smaller ones are encoded in the shortest form, like an int). No GMP or bcmath needed.
 */
final class UInt64 implements \Stringable
{
    /** @var string the 8 big-endian bytes of the value */
    private string $be;

    public function __construct(public readonly string $value)
    {
        if (!preg_match('/^(0|[1-9][0-9]{0,19})$/D', $value)) {
            throw new CborException("UInt64 needs a decimal string without sign or leading zeros, got " . var_export($value, true));
        }
        $be = self::decimalToBigEndian($value);
        if ($be === null) {
            throw new CborException("UInt64 value $value exceeds 2^64-1");
        }
        $this->be = $be;
    }

    /** From the 8 big-endian bytes of a CBOR head. */
    public static function fromBigEndian(string $be): self
    {
        return new self(sprintf('%u', unpack('J', $be)[1]));
    }

    public function bigEndian(): string
    {
        return $this->be;
    }

    /** The value as a PHP int when it fits (below 2^63), else null. */
    public function toInt(): ?int
    {
        $v = unpack('J', $this->be)[1];
        return $v >= 0 ? $v : null;
    }

    public function __toString(): string
    {
        return $this->value;
    }

    /**
     * 8 big-endian bytes of a decimal string, or null above 2^64-1. Two 32-bit limbs, so no step
     * overflows PHP's signed int.
     *
     * @internal
     */
    public static function decimalToBigEndian(string $digits): ?string
    {
        $hi = 0;
        $lo = 0;
        $n = strlen($digits);
        for ($i = 0; $i < $n; $i++) {
            $lo = $lo * 10 + (ord($digits[$i]) - 48);
            $hi = $hi * 10 + ($lo >> 32);
            $lo &= 0xFFFFFFFF;
            if ($hi > 0xFFFFFFFF) {
                return null;
            }
        }
        return pack('NN', $hi, $lo);
    }
}
