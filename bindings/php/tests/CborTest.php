<?php

declare(strict_types=1);

use Hms\Ffi\Cbor\Bytes;
use Hms\Ffi\Cbor\Cbor;
use Hms\Ffi\Cbor\CborException;
use Hms\Ffi\Cbor\Map;
use Hms\Ffi\Cbor\NegInt64;
use Hms\Ffi\Cbor\Set;
use Hms\Ffi\Cbor\Tagged;
use Hms\Ffi\Cbor\UInt64;
use Hms\Ffi\InvalidArgumentException;
use Hms\Ffi\Status;
use PHPUnit\Framework\TestCase;

final class CborTest extends TestCase
{
    private static function vectors(): array
    {
        $file = getenv('HMS_CBOR_VECTORS') ?: dirname(__DIR__, 3) . '/tests/vectors/cbor.json';
        $doc = json_decode((string)file_get_contents($file), true, 512, JSON_THROW_ON_ERROR);
        return $doc['vectors'];
    }

    public static function vectorProvider(): iterable
    {
        foreach (self::vectors() as $v) {
            yield $v['name'] => [$v['name'], $v['type'], hex2bin($v['hex'])];
        }
    }

    /** @dataProvider vectorProvider */
    public function testVectorRoundTripsToIdenticalBytes(string $name, string $type, string $bytes): void
    {
        $value = Cbor::decode($bytes);
        $this->assertSame(bin2hex($bytes), bin2hex(Cbor::encode($value)), $name);
        $expected = [
            'uint' => ['int', UInt64::class], 'int' => ['int'], 'float' => ['float'], 'bool' => ['bool'],
            'null' => ['null'], 'str' => ['string'], 'bytes' => [Bytes::class],
            'timestamp' => [DateTimeImmutable::class], 'list' => ['array'], 'map' => ['array', Map::class],
            'set' => [Set::class],
        ][$type];
        $this->assertContains(get_debug_type($value), $expected, "$name decodes to a native value of its type");
    }

    public function testTheVectorFileIsComplete(): void
    {
        $this->assertGreaterThanOrEqual(40, count(self::vectors()));
    }

    public function testUnsignedBeyondPhpIntDecodesToUInt64(): void
    {
        $max = Cbor::decode(hex2bin('1bffffffffffffffff'));
        $this->assertInstanceOf(UInt64::class, $max);
        $this->assertSame('18446744073709551615', $max->value);
        $this->assertNull($max->toInt());
        $this->assertSame('1b8000000000000000', bin2hex(Cbor::encode(new UInt64('9223372036854775808'))));
        $this->assertSame(PHP_INT_MAX, Cbor::decode(hex2bin('1b7fffffffffffffff')));
        // Small UInt64 values encode in the shortest form, like ints.
        $this->assertSame('1818', bin2hex(Cbor::encode(new UInt64('24'))));
        $this->assertSame('00', bin2hex(Cbor::encode(new UInt64('0'))));
        foreach (['18446744073709551616', '-1', '01', '', '1.5', "1\n"] as $bad) {
            try {
                new UInt64($bad);
                $this->fail("UInt64 accepted " . var_export($bad, true));
            } catch (CborException) {
                $this->addToAssertionCount(1);
            }
        }
    }

    public function testNegativeBeyondPhpIntDecodesToNegInt64(): void
    {
        $min = Cbor::decode(hex2bin('3bffffffffffffffff'));
        $this->assertInstanceOf(NegInt64::class, $min);
        $this->assertSame('-18446744073709551616', $min->value);
        $this->assertSame('3bffffffffffffffff', bin2hex(Cbor::encode($min)));
        $v = Cbor::decode(hex2bin('3b8000000000000000'));
        $this->assertSame('-9223372036854775809', (string)$v);
        $this->assertSame('3b8000000000000000', bin2hex(Cbor::encode(new NegInt64('-9223372036854775809'))));
        $this->assertSame(PHP_INT_MIN, Cbor::decode(hex2bin('3b7fffffffffffffff')));
        $this->expectException(CborException::class);
        new NegInt64('-9223372036854775808');  // fits PHP's int: not a NegInt64
    }

    public function testIntegersUseTheShortestHead(): void
    {
        $cases = [0 => '00', 23 => '17', 24 => '1818', 255 => '18ff', 256 => '190100', 65535 => '19ffff',
            65536 => '1a00010000', 4294967295 => '1affffffff', 4294967296 => '1b0000000100000000',
            -1 => '20', -24 => '37', -25 => '3818', -256 => '38ff', -257 => '390100', PHP_INT_MIN => '3b7fffffffffffffff'];
        foreach ($cases as $int => $hex) {
            $this->assertSame($hex, bin2hex(Cbor::encode($int)), "encode $int");
            $this->assertSame($int, Cbor::decode(hex2bin($hex)), "decode $hex");
        }
    }

    public function testFloatsAreFloat64AndHalfSingleDecode(): void
    {
        $this->assertSame('fb3ff8000000000000', bin2hex(Cbor::encode(1.5)));
        $this->assertSame(1.5, Cbor::decode(hex2bin('f93e00')));
        $this->assertSame(-4.0, Cbor::decode(hex2bin('f9c400')));
        $this->assertSame(INF, Cbor::decode(hex2bin('f97c00')));
        $this->assertNan(Cbor::decode(hex2bin('f97e00')));
        $this->assertSame(5.960464477539063e-8, Cbor::decode(hex2bin('f90001')));
        $this->assertSame(100000.0, Cbor::decode(hex2bin('fa47c35000')));
        $this->assertSame('fb8000000000000000', bin2hex(Cbor::encode(-0.0)));
    }

    public function testBytesAndTextStayDistinct(): void
    {
        $this->assertSame('6161', bin2hex(Cbor::encode('a')));
        $this->assertSame('4161', bin2hex(Cbor::encode(new Bytes('a'))));
        $this->assertSame('a', Cbor::decode(hex2bin('6161')));
        $b = Cbor::decode(hex2bin('4161'));
        $this->assertInstanceOf(Bytes::class, $b);
        $this->assertSame('a', $b->data);
        $this->expectException(CborException::class);
        $this->expectExceptionMessage('Bytes');
        Cbor::encode("\xff\xfe binary in a PHP string");
    }

    public function testDatetimesKeepMicrosecondsAndOffsets(): void
    {
        $dt = Cbor::decode(hex2bin('c0781b313939392d31322d33315432333a35393a35392e3132333435365a'));
        $this->assertInstanceOf(DateTimeImmutable::class, $dt);
        $this->assertSame('1999-12-31 23:59:59.123456 +00:00', $dt->format('Y-m-d H:i:s.u P'));
        $local = new DateTimeImmutable('2026-06-01 10:20:30.000500', new DateTimeZone('+02:00'));
        $enc = Cbor::encode($local);
        $this->assertSame("\xc0\x78\x20" . '2026-06-01T10:20:30.000500+02:00', $enc);
        $back = Cbor::decode($enc);
        $this->assertSame($local->format('Y-m-d\TH:i:s.uP'), $back->format('Y-m-d\TH:i:s.uP'));
        $this->assertSame("\xc0\x74" . '2026-01-02T03:04:05Z', Cbor::encode(new DateTime('2026-01-02 03:04:05', new DateTimeZone('UTC'))));
        // Fractions longer than microseconds are cut to microseconds; lowercase t/z accepted.
        $this->assertSame('05.123456', Cbor::decode(Cbor::encode(new Tagged(0, '2026-01-02t03:04:05.123456789z')))->format('s.u'));
        // Epoch seconds (tag 1) decode too.
        $this->assertSame('1970-01-01T00:01:40.500000+00:00', Cbor::decode(hex2bin('c1fb4059200000000000'))->format('Y-m-d\TH:i:s.uP'));
        foreach (['2026-02-30T00:00:00Z', '2026-01-01T24:00:00Z', '2026-01-01 00:00:00Z', '2026-01-01T00:00:60Z', '2026-01-01T00:00:00+25:00', '2026-01-01T00:00:00'] as $bad) {
            try {
                Cbor::decode(Cbor::encode(new Tagged(0, $bad)));
                $this->fail("accepted date/time $bad");
            } catch (CborException) {
                $this->addToAssertionCount(1);
            }
        }
    }

    public function testSets(): void
    {
        $set = Cbor::decode(hex2bin('d9010283010203'));
        $this->assertInstanceOf(Set::class, $set);
        $this->assertSame([1, 2, 3], $set->toArray());
        $this->assertTrue($set->contains(2));
        $this->assertFalse($set->contains('2'));
        $this->assertSame('d9010282616161' . '62', bin2hex(Cbor::encode(new Set(['a', 'b']))));
        $this->expectException(CborException::class);
        Cbor::decode(hex2bin('d9010201'));  // tag 258 around a non-array
    }

    public function testMapsKeepKeyOrderAndFallBackToMapWhenAnArrayWouldLoseSomething(): void
    {
        $this->assertSame('a2617a01616102', bin2hex(Cbor::encode(['z' => 1, 'a' => 2])));
        $this->assertSame(['z' => 1, 'a' => 2], Cbor::decode(hex2bin('a2617a01616102')));
        $this->assertSame([3 => 'x', 1 => 'y'], Cbor::decode(Cbor::encode([3 => 'x', 1 => 'y'])));
        $lossy = [
            'empty map' => 'a0',
            'text key "7" (PHP would make it int 7)' => 'a1613701',
            'keys 0..n-1 in order (PHP would make it a list)' => 'a2006161016162',
            'byte-string key' => 'a1416101',
            'float key' => 'a1fb3ff800000000000001',
            'text "1" and int 1 both' => 'a26131010102',
        ];
        foreach ($lossy as $what => $hex) {
            $v = Cbor::decode(hex2bin($hex));
            $this->assertInstanceOf(Map::class, $v, $what);
            $this->assertSame($hex, bin2hex(Cbor::encode($v)), "$what re-encodes identically");
        }
        $m = Cbor::decode(hex2bin('a1613701'));
        $this->assertSame(1, $m['7']);
        $this->assertFalse(isset($m[7]));
        $this->assertSame(['7'], $m->keys());
        $all = Cbor::decode(hex2bin('a16161a1616201'), mapObjects: true);
        $this->assertInstanceOf(Map::class, $all);
        $this->assertInstanceOf(Map::class, $all['a']);
        $this->assertSame('a0', bin2hex(Cbor::encode((object)[])));
        $this->assertSame('a1616101', bin2hex(Cbor::encode((object)['a' => 1])));
        $this->assertSame('80', bin2hex(Cbor::encode([])));
    }

    public function testOtherTagsArePreserved(): void
    {
        $v = Cbor::decode(hex2bin('d82072687474703a2f2f6578616d706c652e636f6d'));
        $this->assertInstanceOf(Tagged::class, $v);
        $this->assertSame(32, $v->tag);
        $this->assertSame('d82072687474703a2f2f6578616d706c652e636f6d', bin2hex(Cbor::encode($v)));
    }

    public static function hostileProvider(): iterable
    {
        yield 'empty input' => [''];
        yield 'truncated uint16' => ['19ff'];
        yield 'truncated uint64' => ['1b00000000'];
        yield 'text longer than input' => ['7a7fffffff61'];
        yield 'bytes of 2^64-1' => ['5bffffffffffffffff'];
        yield 'array of 2^32-1 items' => ['9affffffff01'];
        yield 'array of 2^64-1 items' => ['9bffffffffffffffff'];
        yield 'map of 2^31 pairs' => ['ba80000000'];
        yield 'truncated map' => ['a26161016162'];
        yield 'reserved additional info 28' => ['1c'];
        yield 'reserved additional info 30' => ['5e'];
        yield 'indefinite byte string' => ['5f41614162ff'];
        yield 'indefinite array' => ['9f01ff'];
        yield 'indefinite map' => ['bf616101ff'];
        yield 'lone break' => ['ff'];
        yield 'undefined' => ['f7'];
        yield 'simple value 16' => ['f0'];
        yield 'simple value 255' => ['f8ff'];
        yield 'truncated simple' => ['f8'];
        yield 'truncated float64' => ['fb3ff8'];
        yield 'invalid UTF-8' => ['62c328'];
        yield 'overlong UTF-8' => ['62c0af'];
        yield 'UTF-16 surrogate' => ['63eda080'];
        yield 'duplicate map key' => ['a2616101616102'];
        yield 'trailing bytes' => ['0000'];
        yield 'tag 0 around an int' => ['c001'];
        yield 'tag 0 garbage' => ['c06161'];
        yield 'tag 1 around a string' => ['c16161'];
        yield 'tag 1 out of range' => ['c1fb7ff0000000000000'];
        yield 'tag beyond 2^63' => ['dbffffffffffffffff01'];
        yield 'deep nesting' => [str_repeat('81', 300) . '01'];
        yield 'deep tags' => [str_repeat('d820', 300) . '01'];
        yield 'deep maps' => [str_repeat('a16161', 300) . '01'];
    }

    /** @dataProvider hostileProvider */
    public function testHostileInputRaisesCborException(string $hex): void
    {
        try {
            Cbor::decode(hex2bin($hex));
            $this->fail("decoded hostile input $hex");
        } catch (CborException $e) {
            $this->assertNotSame('', $e->getMessage());
            $this->assertInstanceOf(InvalidArgumentException::class, $e, 'a CBOR error is an INVALID_ARGUMENT');
            $this->assertSame(Status::INVALID_ARGUMENT, $e->getStatus());
        }
    }

    public function testEveryTruncationOfEveryVectorRaises(): void
    {
        foreach (self::vectors() as $v) {
            $bytes = hex2bin($v['hex']);
            for ($n = 0; $n < strlen($bytes); $n++) {
                try {
                    Cbor::decode(substr($bytes, 0, $n));
                    $this->fail("{$v['name']} truncated to $n bytes decoded");
                } catch (CborException) {
                    $this->addToAssertionCount(1);
                }
            }
        }
    }

    /** Random mutations of the vectors: each decodes or raises CborException; never a warning or another error. */
    public function testMutationFuzz(): void
    {
        mt_srand(8949);
        $vectors = array_map(fn ($v) => hex2bin($v['hex']), self::vectors());
        $iters = (int)(getenv('HMS_PHP_FUZZ_ITERS') ?: 20000);
        $decoded = 0;
        for ($i = 0; $i < $iters; $i++) {
            $b = $vectors[mt_rand(0, count($vectors) - 1)];
            for ($k = mt_rand(1, 4); $k > 0; $k--) {
                $pos = mt_rand(0, max(0, strlen($b) - 1));
                $b = match (mt_rand(0, 3)) {
                    0 => substr_replace($b, chr(mt_rand(0, 255)), $pos, 1),
                    1 => substr_replace($b, '', $pos, 1),
                    2 => substr_replace($b, chr(mt_rand(0, 255)), $pos, 0),
                    3 => $b . chr(mt_rand(0, 255)),
                };
            }
            try {
                $v = Cbor::decode($b);
                Cbor::encode($v);  // whatever decodes must encode again
                $decoded++;
            } catch (CborException) {
            }
        }
        $this->assertGreaterThan(0, $decoded);
        $this->assertLessThan($iters, $decoded);
    }

    public function testEncodingRefusesWhatCborCannotCarry(): void
    {
        $cases = [
            'object' => new ArrayObject([]),
            'resource-like closure' => fn () => 1,
            'self-containing Map' => (function () {
                $m = new Map();
                $m['self'] = $m;
                return $m;
            })(),
        ];
        foreach ($cases as $what => $value) {
            try {
                Cbor::encode($value);
                $this->fail("encoded $what");
            } catch (CborException) {
                $this->addToAssertionCount(1);
            }
        }
    }
}
