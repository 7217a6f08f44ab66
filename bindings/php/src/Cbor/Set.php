<?php

declare(strict_types=1);

namespace Hms\Ffi\Cbor;

/**
 * A set (CBOR tag 258 around an array). Items keep the order they were given or decoded in, so a
 * decoded set re-encodes to the same bytes. Duplicates are not removed: a set is what the peer sent.
 *
 * @implements \IteratorAggregate<int, mixed>
 */
final class Set implements \IteratorAggregate, \Countable
{
    /** @var list<mixed> */
    private array $items;

    /** @param iterable<mixed> $items */
    public function __construct(iterable $items = [])
    {
        $this->items = [];
        foreach ($items as $item) {
            $this->items[] = $item;
        }
    }

    /** @return list<mixed> */
    public function toArray(): array
    {
        return $this->items;
    }

    /** Strict (===) membership, so 1 and "1" stay different members. */
    public function contains(mixed $value): bool
    {
        return in_array($value, $this->items, true);
    }

    public function count(): int
    {
        return count($this->items);
    }

    public function getIterator(): \ArrayIterator
    {
        return new \ArrayIterator($this->items);
    }
}
