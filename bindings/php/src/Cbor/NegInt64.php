<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/**
 * A negative integer in [-2^64, -2^63-1] (CBOR major type 1 with an argument of 2^63 or more), below
 * what PHP's int holds. The counterpart of UInt64: a decimal string that re-encodes identically.
 */
final class NegInt64 implements \Stringable
{
    /** @var string the 8 big-endian bytes of the CBOR argument (-1 - value) */
    private string $be;

    public function __construct(public readonly string $value)
    {
        if (!preg_match('/^-[1-9][0-9]{18,19}$/D', $value)) {
            throw new CborException("NegInt64 needs a decimal string from -18446744073709551616 to -9223372036854775809, got " . var_export($value, true));
        }
        // argument = |value| - 1
        $be = UInt64::decimalToBigEndian(self::decrement(substr($value, 1)));
        if ($be === null || unpack('J', $be)[1] >= 0) {
            throw new CborException("NegInt64 value $value is outside [-2^64, -2^63-1] (smaller magnitudes are plain PHP ints)");
        }
        $this->be = $be;
    }

    /** From the 8 big-endian bytes of a CBOR major-type-1 argument of 2^63 or more. */
    public static function fromArgument(string $be): self
    {
        return new self('-' . self::increment(sprintf('%u', unpack('J', $be)[1])));
    }

    public function argumentBigEndian(): string
    {
        return $this->be;
    }

    public function __toString(): string
    {
        return $this->value;
    }

    private static function increment(string $d): string
    {
        $i = strlen($d) - 1;
        while ($i >= 0 && $d[$i] === '9') {
            $d[$i] = '0';
            $i--;
        }
        return $i < 0 ? '1' . $d : substr_replace($d, (string)((int)$d[$i] + 1), $i, 1);
    }

    private static function decrement(string $d): string
    {
        $i = strlen($d) - 1;
        while ($i >= 0 && $d[$i] === '0') {
            $d[$i] = '9';
            $i--;
        }
        $d = substr_replace($d, (string)((int)$d[$i] - 1), $i, 1);
        return ltrim($d, '0') === '' ? '0' : ltrim($d, '0');
    }
}
