<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/**
 * A CBOR map that a PHP array cannot hold without loss: empty maps (an empty PHP array is encoded as
 * an empty CBOR array), keys of other types than int/text (floats, byte strings, arrays, ...), text
 * keys PHP would turn into ints ("7"), and maps whose keys are 0..n-1 in order (PHP would treat them
 * as a list). Keys stay in the order given, with their types, so a decoded Map re-encodes to the same
 * bytes. Look-ups compare keys strictly (===, and by value for Bytes/UInt64/...).
 *
 * @implements \IteratorAggregate<mixed, mixed>
 * @implements \ArrayAccess<mixed, mixed>
 */
final class Map implements \IteratorAggregate, \Countable, \ArrayAccess
{
    /** @var list<array{0: mixed, 1: mixed}> */
    private array $pairs = [];

    /** @param iterable<array{0: mixed, 1: mixed}> $pairs [key, value] pairs, in order */
    public function __construct(iterable $pairs = [])
    {
        foreach ($pairs as $pair) {
            if (!is_array($pair) || count($pair) !== 2 || !array_key_exists(0, $pair) || !array_key_exists(1, $pair)) {
                throw new CborException('Map takes [key, value] pairs');
            }
            $this->pairs[] = [$pair[0], $pair[1]];
        }
    }

    /** A Map with the keys and values of a PHP array (int keys stay ints). */
    public static function fromArray(array $array): self
    {
        $m = new self();
        foreach ($array as $k => $v) {
            $m->pairs[] = [$k, $v];
        }
        return $m;
    }

    /** @return list<array{0: mixed, 1: mixed}> */
    public function pairs(): array
    {
        return $this->pairs;
    }

    /** @return list<mixed> */
    public function keys(): array
    {
        return array_column($this->pairs, 0);
    }

    /** @return list<mixed> */
    public function values(): array
    {
        return array_column($this->pairs, 1);
    }

    /**
     * The map as a PHP array. Lossy when keys collide after PHP's key conversion, so it refuses keys
     * that are neither int nor string (Bytes keys become their bytes).
     */
    public function toArray(): array
    {
        $out = [];
        foreach ($this->pairs as [$k, $v]) {
            if ($k instanceof Bytes) {
                $k = $k->data;
            } elseif (!is_int($k) && !is_string($k)) {
                throw new CborException('a map key of type ' . get_debug_type($k) . ' cannot be a PHP array key; iterate the Map instead');
            }
            $out[$k] = $v;
        }
        return $out;
    }

    public function count(): int
    {
        return count($this->pairs);
    }

    public function getIterator(): \Generator
    {
        foreach ($this->pairs as [$k, $v]) {
            yield $k => $v;
        }
    }

    public function offsetExists(mixed $offset): bool
    {
        return $this->find($offset) !== null;
    }

    public function offsetGet(mixed $offset): mixed
    {
        $i = $this->find($offset);
        if ($i === null) {
            throw new \OutOfBoundsException('no such key in the map: ' . var_export($offset instanceof Bytes ? $offset->data : $offset, true));
        }
        return $this->pairs[$i][1];
    }

    public function offsetSet(mixed $offset, mixed $value): void
    {
        if ($offset === null) {
            throw new CborException('a Map needs explicit keys ($map[$key] = $value)');
        }
        $i = $this->find($offset);
        if ($i === null) {
            $this->pairs[] = [$offset, $value];
        } else {
            $this->pairs[$i][1] = $value;
        }
    }

    public function offsetUnset(mixed $offset): void
    {
        $i = $this->find($offset);
        if ($i !== null) {
            array_splice($this->pairs, $i, 1);
        }
    }

    private function find(mixed $key): ?int
    {
        foreach ($this->pairs as $i => [$k]) {
            if ($k === $key || (is_object($k) && is_object($key) && $k == $key && get_class($k) === get_class($key))) {
                return $i;
            }
        }
        return null;
    }
}
