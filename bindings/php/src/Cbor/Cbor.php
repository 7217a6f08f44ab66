<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/**
 * A small, strict CBOR (RFC 8949) codec with the conventions every hms-ffi binding shares
 * (tests/vectors/cbor.json): preferred serialization (shortest integer heads), float64 for every
 * float, definite lengths, map keys in the given order, datetimes as tag 0 RFC 3339 strings, sets as
 * tag 258 arrays.
 *
 * PHP value  <->  CBOR
 *   null, bool, int, float          null, true/false, integers (shortest head), float64
 *   string                          text string (must be valid UTF-8)
 *   Bytes                           byte string
 *   list array (array_is_list)      array (an empty PHP array is an empty array)
 *   other array                     map (int keys as integers, string keys as text)
 *   Map                             map (any key types, order kept; what lossy maps decode to)
 *   Set                             tag 258 + array
 *   DateTimeInterface               tag 0 + "YYYY-MM-DDTHH:MM:SS[.uuuuuu](Z|+hh:mm)"; decodes to
 *                                   DateTimeImmutable with microseconds and the offset it carried
 *   UInt64 / NegInt64               integers beyond PHP's int (>= 2^63, < -2^63), as decimal strings
 *   Tagged                          any other tag
 *   stdClass                        map of its properties (so (object)[] is an empty map)
 *
 * Decoding a map gives a PHP array when that is lossless — non-empty, keys are ints or text that PHP
 * keeps as text, and it is not 0..n-1 in order — and a Map otherwise (decode(..., mapObjects: true)
 * always gives Map). Decoding never emits a warning and never trusts a length: malformed, truncated,
 * over-deep or unsupported input (indefinite lengths, undefined and unassigned simple values,
 * invalid UTF-8, duplicate map keys, trailing bytes) throws CborException.
 */
final class Cbor
{
    public const MAX_DEPTH = 256;

    private string $data = '';
    private int $pos = 0;
    private int $end = 0;
    private bool $mapObjects = false;

    public static function encode(mixed $value): string
    {
        return self::enc($value, 0);
    }

    public static function decode(string $data, bool $mapObjects = false): mixed
    {
        $d = new self();
        $d->data = $data;
        $d->end = strlen($data);
        $d->mapObjects = $mapObjects;
        if ($d->end === 0) {
            throw new CborException('empty input is not a CBOR item');
        }
        $value = $d->item(0);
        if ($d->pos !== $d->end) {
            throw new CborException(sprintf('%d trailing byte(s) after the CBOR item at offset %d', $d->end - $d->pos, $d->pos));
        }
        return $value;
    }

    // ---------------------------------------------------------------------------------- encoding

    private static function head(int $major, int $n): string
    {
        $m = $major << 5;
        if ($n < 24) {
            return chr($m | $n);
        }
        if ($n < 0x100) {
            return chr($m | 24) . chr($n);
        }
        if ($n < 0x10000) {
            return chr($m | 25) . pack('n', $n);
        }
        if ($n < 0x100000000) {
            return chr($m | 26) . pack('N', $n);
        }
        return chr($m | 27) . pack('J', $n);
    }

    private static function enc(mixed $v, int $depth): string
    {
        if ($depth > self::MAX_DEPTH) {
            throw new CborException('value nested deeper than ' . self::MAX_DEPTH . ' levels (or it contains itself)');
        }
        switch (gettype($v)) {
            case 'integer':
                return $v >= 0 ? self::head(0, $v) : self::head(1, ~$v);
            case 'string':
                if (!preg_match('//u', $v)) {
                    throw new CborException('a PHP string is encoded as CBOR text and must be valid UTF-8; wrap binary data in Hms\Ffi\Cbor\Bytes');
                }
                return self::head(3, strlen($v)) . $v;
            case 'double':
                return "\xfb" . pack('E', $v);
            case 'boolean':
                return $v ? "\xf5" : "\xf4";
            case 'NULL':
                return "\xf6";
            case 'array':
                if (array_is_list($v)) {
                    $out = self::head(4, count($v));
                    foreach ($v as $item) {
                        $out .= self::enc($item, $depth + 1);
                    }
                    return $out;
                }
                $out = self::head(5, count($v));
                foreach ($v as $k => $item) {
                    $out .= self::enc($k, $depth + 1) . self::enc($item, $depth + 1);
                }
                return $out;
        }
        if ($v instanceof Bytes) {
            return self::head(2, strlen($v->data)) . $v->data;
        }
        if ($v instanceof Map) {
            $out = self::head(5, count($v));
            foreach ($v->pairs() as [$k, $item]) {
                $out .= self::enc($k, $depth + 1) . self::enc($item, $depth + 1);
            }
            return $out;
        }
        if ($v instanceof Set) {
            $out = "\xd9\x01\x02" . self::head(4, count($v));
            foreach ($v as $item) {
                $out .= self::enc($item, $depth + 1);
            }
            return $out;
        }
        if ($v instanceof \DateTimeInterface) {
            $s = $v->format('Y-m-d\TH:i:s');
            if ((int)$v->format('u') !== 0) {
                $s .= '.' . $v->format('u');
            }
            $s .= $v->getOffset() === 0 ? 'Z' : $v->format('P');
            return "\xc0" . self::head(3, strlen($s)) . $s;
        }
        if ($v instanceof UInt64) {
            $i = $v->toInt();
            return $i !== null ? self::head(0, $i) : "\x1b" . $v->bigEndian();
        }
        if ($v instanceof NegInt64) {
            return "\x3b" . $v->argumentBigEndian();
        }
        if ($v instanceof Tagged) {
            return self::head(6, $v->tag) . self::enc($v->value, $depth + 1);
        }
        if ($v instanceof \stdClass) {
            return self::enc(self::objectMap($v), $depth);
        }
        throw new CborException('cannot encode a ' . get_debug_type($v) . ' as CBOR (use arrays, scalars, Bytes, Map, Set, DateTimeInterface, UInt64, Tagged)');
    }

    private static function objectMap(\stdClass $o): Map
    {
        return Map::fromArray(get_object_vars($o));
    }

    // ---------------------------------------------------------------------------------- decoding

    /** Reads a head; returns [major, additional info, argument]; the argument of ai 27 may wrap negative. */
    private function head8(): array
    {
        if ($this->pos >= $this->end) {
            throw new CborException("truncated CBOR: expected an item at offset {$this->pos}");
        }
        $ib = ord($this->data[$this->pos++]);
        $major = $ib >> 5;
        $ai = $ib & 31;
        if ($ai < 24) {
            return [$major, $ai, $ai];
        }
        $size = match ($ai) {
            24 => 1, 25 => 2, 26 => 4, 27 => 8,
            31 => throw new CborException(sprintf('indefinite-length item (initial byte 0x%02x) at offset %d: hms-ffi peers send definite lengths only', $ib, $this->pos - 1)),
            default => throw new CborException(sprintf('malformed CBOR: reserved additional information %d at offset %d', $ai, $this->pos - 1)),
        };
        if ($this->end - $this->pos < $size) {
            throw new CborException("truncated CBOR: a $size-byte argument at offset {$this->pos} runs past the end");
        }
        $raw = substr($this->data, $this->pos, $size);
        $this->pos += $size;
        $arg = match ($size) {
            1 => ord($raw),
            2 => unpack('n', $raw)[1],
            4 => unpack('N', $raw)[1],
            8 => unpack('J', $raw)[1],
        };
        return [$major, $ai, $arg, $raw];
    }

    private function length(int $n, int $perItem, string $what): int
    {
        // A length can never exceed the bytes left: refuse before allocating or looping.
        if ($n < 0 || $n > intdiv($this->end - $this->pos, $perItem)) {
            throw new CborException(sprintf('truncated or hostile CBOR: %s of %s item(s) at offset %d but only %d byte(s) left',
                $what, $n < 0 ? sprintf('%u', $n) : (string)$n, $this->pos, $this->end - $this->pos));
        }
        return $n;
    }

    private function item(int $depth): mixed
    {
        if ($depth > self::MAX_DEPTH) {
            throw new CborException('CBOR nested deeper than ' . self::MAX_DEPTH . ' levels');
        }
        $h = $this->head8();
        [$major, $ai, $arg] = $h;
        switch ($major) {
            case 0:
                return $arg >= 0 ? $arg : UInt64::fromBigEndian($h[3]);
            case 1:
                return $arg >= 0 ? -1 - $arg : NegInt64::fromArgument($h[3]);
            case 2:
                $n = $this->length($arg, 1, 'a byte string');
                $s = substr($this->data, $this->pos, $n);
                $this->pos += $n;
                return new Bytes($s);
            case 3:
                return $this->text($arg);
            case 4:
                $n = $this->length($arg, 1, 'an array');
                $out = [];
                for ($i = 0; $i < $n; $i++) {
                    $out[] = $this->item($depth + 1);
                }
                return $out;
            case 5:
                return $this->map($this->length($arg, 2, 'a map'), $depth);
            case 6:
                return $this->tag($arg, $depth);
            default:
                return $this->simple($ai, $arg, $h);
        }
    }

    private function text(int $arg): string
    {
        $n = $this->length($arg, 1, 'a text string');
        $s = substr($this->data, $this->pos, $n);
        if (!preg_match('//u', $s)) {
            throw new CborException("invalid UTF-8 in the text string at offset {$this->pos}");
        }
        $this->pos += $n;
        return $s;
    }

    private function map(int $n, int $depth): mixed
    {
        $pairs = [];
        $seen = [];
        $lossless = !$this->mapObjects && $n > 0;
        for ($i = 0; $i < $n; $i++) {
            $start = $this->pos;
            $k = $this->item($depth + 1);
            $rawKey = substr($this->data, $start, $this->pos - $start);
            if (isset($seen[$rawKey])) {
                throw new CborException("duplicate map key at offset $start");
            }
            $seen[$rawKey] = true;
            $pairs[] = [$k, $this->item($depth + 1)];
            if ($lossless && !(is_int($k) || (is_string($k) && (string)(int)$k !== $k))) {
                $lossless = false;  // PHP would change the key ("7" -> 7) or cannot hold it
            }
        }
        if ($lossless) {
            $arr = [];
            foreach ($pairs as [$k, $v]) {
                $arr[$k] = $v;
            }
            if (count($arr) === $n && !array_is_list($arr)) {
                return $arr;
            }
        }
        return new Map($pairs);
    }

    private function tag(int $tag, int $depth): mixed
    {
        if ($tag < 0) {
            throw new CborException('CBOR tag numbers of 2^63 and above are not supported');
        }
        $at = $this->pos;
        $v = $this->item($depth + 1);
        switch ($tag) {
            case 0:
                if (!is_string($v)) {
                    throw new CborException("tag 0 (date/time) at offset $at must wrap a text string, got " . get_debug_type($v));
                }
                return self::parseDateTime($v);
            case 1:
                if (!is_int($v) && !is_float($v)) {
                    throw new CborException("tag 1 (epoch time) at offset $at must wrap a number, got " . get_debug_type($v));
                }
                if (!is_finite((float)$v) || abs((float)$v) > 253402300799.0) {
                    throw new CborException("tag 1 (epoch time) at offset $at is out of range");
                }
                $dt = \DateTimeImmutable::createFromFormat('U.u', sprintf('%.6F', $v), new \DateTimeZone('UTC'));
                if ($dt === false) {
                    throw new CborException("tag 1 (epoch time) at offset $at cannot be represented");
                }
                return $dt;
            case 258:
                if (!is_array($v) || !array_is_list($v)) {
                    throw new CborException("tag 258 (set) at offset $at must wrap an array");
                }
                return new Set($v);
            default:
                return new Tagged($tag, $v);
        }
    }

    private function simple(int $ai, int $arg, array $h): mixed
    {
        switch ($ai) {
            case 20:
                return false;
            case 21:
                return true;
            case 22:
                return null;
            case 25:
                return self::half($arg);
            case 26:
                return unpack('G', $h[3])[1];
            case 27:
                return unpack('E', $h[3])[1];
            case 23:
                throw new CborException('CBOR "undefined" (0xf7) has no PHP value; send null');
            default:
                throw new CborException(sprintf('unsupported CBOR simple value %d at offset %d', $ai === 24 ? $arg : $ai, $this->pos - 1));
        }
    }

    private static function half(int $h): float
    {
        $exp = ($h >> 10) & 0x1f;
        $mant = $h & 0x3ff;
        if ($exp === 0) {
            $val = $mant * 2.0 ** -24;
        } elseif ($exp === 31) {
            $val = $mant === 0 ? INF : NAN;
        } else {
            $val = ($mant + 1024) * 2.0 ** ($exp - 25);
        }
        return ($h & 0x8000) ? -$val : $val;
    }

    /** RFC 3339 date-time -> DateTimeImmutable (microseconds kept, digits past 6 dropped). */
    public static function parseDateTime(string $s): \DateTimeImmutable
    {
        if (!preg_match('/^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/D', $s, $m)) {
            throw new CborException('tag 0 date/time is not RFC 3339: ' . var_export(substr($s, 0, 64), true));
        }
        [, $y, $mo, $d, $hh, $mi, $ss] = $m;
        if (!checkdate((int)$mo, (int)$d, (int)$y) || (int)$hh > 23 || (int)$mi > 59 || (int)$ss > 59) {
            throw new CborException("tag 0 date/time $s is not a valid date and time (leap seconds are not supported)");
        }
        $micro = substr(str_pad($m[7] ?? '', 6, '0'), 0, 6);
        if (($m[8] ?? '') !== '') {
            $tz = new \DateTimeZone('UTC');
        } else {
            if ((int)$m[10] > 23 || (int)$m[11] > 59) {
                throw new CborException("tag 0 date/time $s has an invalid UTC offset");
            }
            $tz = new \DateTimeZone($m[9] . $m[10] . ':' . $m[11]);
        }
        $dt = \DateTimeImmutable::createFromFormat('!Y-m-d H:i:s.u', "$y-$mo-$d $hh:$mi:$ss.$micro", $tz);
        if ($dt === false) {
            throw new CborException("tag 0 date/time $s cannot be represented");
        }
        return $dt;
    }
}
