<?php

declare(strict_types=1);

use Hms\Ffi\Cbor\Bytes;
use Hms\Ffi\Cbor\Cbor;
use Hms\Ffi\Cbor\Set;
use Hms\Ffi\Cbor\UInt64;
use Hms\Ffi\Client;
use Hms\Ffi\ContentType;
use Hms\Ffi\DeadlineExceededException;
use Hms\Ffi\FailedPreconditionException;
use Hms\Ffi\FfiException;
use Hms\Ffi\InternalException;
use Hms\Ffi\InvalidArgumentException;
use Hms\Ffi\Node;
use Hms\Ffi\NotFoundException;
use Hms\Ffi\AlreadyExistsException;
use Hms\Ffi\Status;
use Hms\Ffi\Tests\ServerProcess;
use Hms\Ffi\UnavailableException;
use Hms\Ffi\UnimplementedException;
use PHPUnit\Framework\TestCase;

/** A PHP service in another process (tests/fixtures/server.php) called from this one. */
final class ClientServerTest extends TestCase
{
    private string $dir;
    private ?ServerProcess $server = null;
    private ?Client $client = null;

    protected function setUp(): void
    {
        $this->dir = ServerProcess::runtimeDir();
        $this->server = new ServerProcess('php.test');
        $this->client = Client::connect('php.test', '^1', timeout: 5.0);
    }

    protected function tearDown(): void
    {
        $this->client?->close();
        $this->server?->stop(SIGKILL);
        ServerProcess::removeDir($this->dir);
        putenv('HMS_FFI_RUNTIME_DIR');
    }

    public function testCallsRoundTripPhpValues(): void
    {
        $c = $this->client;
        $this->assertSame('php.test', $c->service);
        $this->assertSame('1.0.0', $c->version);
        $this->assertSame($this->server->pid, $c->serverPid);
        $order = ['id' => 7, 'items' => [['sku' => 'A', 'qty' => 2]], 'paid' => false, 'amount' => 9.5,
            'when' => new DateTimeImmutable('2026-01-02 03:04:05.250000', new DateTimeZone('UTC')),
            'big' => new UInt64('18446744073709551615'), 'tags' => new Set(['a']), 'sig' => new Bytes("\xde\xad")];
        $back = $c->call('echo', $order, 2.0);
        $this->assertSame(Cbor::encode($order), Cbor::encode($back));
        $this->assertSame('2026-01-02 03:04:05.250000', $back['when']->format('Y-m-d H:i:s.u'));
        $this->assertNull($c->call('echo', null, 2.0));
        $this->assertSame('text', $c->call('echo', 'text', 2.0));
        // Bytes travel raw and come back raw (as Bytes); callBytes passes bytes through untouched.
        $raw = $c->call('echo', new Bytes("\x00\xffraw"), 2.0);
        $this->assertInstanceOf(Bytes::class, $raw);
        $this->assertSame("\x00\xffraw", $raw->data);
        $this->assertSame("\x01\x02", $c->callBytes('echo', "\x01\x02", ContentType::RAW, 2.0, $ct));
        $this->assertSame(ContentType::RAW, $ct);
        // A CBOR byte string stays a CBOR byte string (the reply uses the request's codec).
        $this->assertSame("\x42\x01\x02", $c->callBytes('echo', "\x42\x01\x02", ContentType::CBOR, 2.0, $ct));
        $this->assertSame(ContentType::CBOR, $ct);
        $this->assertSame('ABC', $c->callBytes('raw_upper', 'abc', ContentType::RAW, 2.0));
        $this->assertSame(['a' => [1, 2]], $c->call('json_echo', ['a' => [1, 2]], 2.0, codec: 'json'));
        $this->assertSame(6, $c->call('calls', null, 2.0));
        $this->assertArrayHasKey('echo', $c->functions());
    }

    public function testHandlerErrorsBecomeStatusCodesAndTheServerKeepsServing(): void
    {
        $c = $this->client;
        try {
            $c->call('missing', null, 2.0);
            $this->fail('no error');
        } catch (NotFoundException $e) {
            $this->assertTrue($e->isRemote());
            $this->assertSame(Status::NOT_FOUND, $e->getStatus());
            $this->assertSame('no such order', $e->getMessage());
            $this->assertSame(7, $e->getDetails()['id']);
            $this->assertSame("\x00\x01", $e->getDetails()['blob']->data);
        }
        foreach (['crash' => 'LogicException: boom in PHP', 'type_error' => 'TypeError', 'division' => 'DivisionByZeroError'] as $fn => $what) {
            try {
                $c->call($fn, 'not an int', 2.0);
                $this->fail("$fn: no error");
            } catch (InternalException $e) {
                $this->assertTrue($e->isRemote(), $fn);
                $this->assertStringContainsString($what, $e->getMessage(), $fn);
            }
        }
        try {
            $c->call('long_message', null, 2.0);
            $this->fail('no error');
        } catch (InternalException $e) {
            $this->assertLessThanOrEqual(255, strlen($e->getMessage()));
            $this->assertTrue((bool)preg_match('//u', $e->getMessage()), 'a cut message stays valid UTF-8');
        }
        foreach ([Status::ABORTED, Status::UNAUTHENTICATED, Status::DATA_LOSS] as $code) {
            try {
                $c->call('custom_status', [$code, "code $code"], 2.0);
                $this->fail('no error');
            } catch (FfiException $e) {
                $this->assertSame($code, $e->getStatus());
                $this->assertSame(FfiException::classFor($code), get_class($e));
                $this->assertSame("code $code", $e->getMessage());
            }
        }
        try {
            $c->call('raw_bad', new Bytes('x'), 2.0);
            $this->fail('no error');
        } catch (InternalException $e) {
            $this->assertStringContainsString('codec "raw"', $e->getMessage());
        }
        // Malformed CBOR sent to a handler is the caller's INVALID_ARGUMENT, decided by the server.
        try {
            $c->callBytes('echo', "\x9f\x01", ContentType::CBOR, 2.0);
            $this->fail('no error');
        } catch (InvalidArgumentException $e) {
            $this->assertTrue($e->isRemote());
            $this->assertStringContainsString('indefinite', $e->getMessage());
        }
        // A context kept past its call refuses to be used (and that error is reported, not fatal).
        $c->call('keep_ctx', null, 2.0);
        try {
            $c->call('use_kept_ctx', null, 2.0);
            $this->fail('no error');
        } catch (FailedPreconditionException $e) {
            $this->assertTrue($e->isRemote());
            $this->assertStringContainsString('only valid while its handler runs', $e->getMessage());
        }
        $this->assertTrue($this->server->alive());
        $this->assertSame('still here', $c->call('echo', 'still here', 2.0));
    }

    public function testCallContext(): void
    {
        $info = $this->client->call('ctx', null, 3.0);
        $this->assertSame(getmypid(), $info['peer']['pid']);
        $this->assertSame(posix_getuid(), $info['peer']['uid']);
        $this->assertSame('ctx', $info['function']);
        $this->assertSame('php.test', $info['service']);
        $this->assertGreaterThan(0.5, $info['time_left']);
        $this->assertLessThanOrEqual(3.0, $info['time_left']);
        $this->assertFalse($info['cancelled']);
        $this->assertSame($this->server->pid, $info['pid'], 'the handler ran in the serving process');
        $this->assertNull($this->client->call('ctx', null)['time_left'], 'no timeout, no deadline');
    }

    public function testLocalErrors(): void
    {
        try {
            $this->client->call('nope', null);
            $this->fail('no error');
        } catch (NotFoundException $e) {
            $this->assertFalse($e->isRemote());
            $this->assertStringContainsString('echo', $e->getMessage(), 'lists the functions it has');
        }
        try {
            Client::connect('php.absent', '^1', timeout: 1.0);
            $this->fail('no error');
        } catch (NotFoundException $e) {
            $this->assertFalse($e->isRemote());
            $this->assertStringContainsString('php.absent', $e->getMessage());
        }
        try {
            Client::connect('php.test', '^2', timeout: 1.0);
            $this->fail('no error');
        } catch (NotFoundException $e) {
            $this->assertStringContainsString('1.0.0', $e->getMessage(), 'names the versions it saw');
        }
        try {
            $this->client->call('echo', "\xff not UTF-8");
            $this->fail('no error');
        } catch (InvalidArgumentException $e) {
            $this->assertFalse($e->isRemote());
        }
        try {
            $this->client->call('echo', 1, -1.0);
            $this->fail('no error');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('timeout', $e->getMessage());
        }
        $node = new Node();
        try {
            $node->service('php.test', '1.0.0');
            $this->fail('registered a service another process serves');
        } catch (AlreadyExistsException $e) {
            $this->assertFalse($e->isRemote());
        }
        try {
            $node->service('bad name!', '1.0.0');
            $this->fail('no error');
        } catch (InvalidArgumentException) {
            $this->addToAssertionCount(1);
        }
        $svc = $node->service('php.local', '1.0.0');
        $svc->function('f', fn () => 1);
        try {
            $svc->function('f', fn () => 2);
            $this->fail('duplicate function');
        } catch (AlreadyExistsException) {
            $this->addToAssertionCount(1);
        }
        try {
            $svc->function('g', fn () => 2, codec: 'xml');
            $this->fail('unknown codec');
        } catch (InvalidArgumentException) {
            $this->addToAssertionCount(1);
        }
        $node->close();
        $node->close();  // idempotent
        $this->expectException(FailedPreconditionException::class);
        $node->service('php.other', '1.0.0');
    }

    public function testDeadlineAndBigReplies(): void
    {
        $t0 = hrtime(true);
        try {
            $this->client->call('sleep', 0.5, 0.05);
            $this->fail('no error');
        } catch (DeadlineExceededException $e) {
            $this->assertFalse($e->isRemote(), 'the deadline passed here');
        }
        $this->assertLessThan(400e6, hrtime(true) - $t0);
        $this->assertSame(1000, strlen($this->client->call('big', 1000, 2.0)->data));
        try {
            $this->client->call('big', $this->client->maxMessage + 1, 5.0);
            $this->fail('no error');
        } catch (FfiException $e) {
            $this->assertSame(Status::RESOURCE_EXHAUSTED, $e->getStatus());
            $this->assertTrue($e->isRemote());
        }
    }

    public function testServerDeathIsUnavailableAndClosedClientsRefuse(): void
    {
        $this->server->stop(SIGKILL);
        try {
            $this->client->call('echo', 1, 2.0);
            $this->fail('no error');
        } catch (UnavailableException $e) {
            $this->assertFalse($e->isRemote());
        }
        $this->client->close();
        $this->client->close();
        $this->expectException(FailedPreconditionException::class);
        $this->client->call('echo', 1);
    }

    public function testSigtermEndsServeAndTheServerExitsZero(): void
    {
        $this->client->call('echo', 1, 2.0);
        $this->client->close();
        $this->assertSame(0, $this->server->stop(SIGTERM));
        $this->server = null;
    }

    public function testStopFromAHandlerEndsServe(): void
    {
        $this->assertSame('stopping', $this->client->call('stop', null, 2.0));
        $deadline = microtime(true) + 3;
        while ($this->server->alive() && microtime(true) < $deadline) {
            usleep(10000);
        }
        $this->assertFalse($this->server->alive());
        $this->assertStringContainsString('served 0 echo calls', $this->server->stderr());
    }

    public function testNodeCloseClosesItsClients(): void
    {
        $node = new Node('php-closer');
        $c = $node->connect('php.test', '^1');
        $this->assertSame(5, $c->call('echo', 5, 2.0));
        $node->close();
        try {
            $c->call('echo', 5);
            $this->fail('no error');
        } catch (FailedPreconditionException $e) {
            $this->assertStringContainsString('closed', $e->getMessage());
        }
    }

    public function testServeWithATimeoutReturns(): void
    {
        $node = new Node('php-timeout');
        $node->service('php.timeout', '1.0.0')->function('x', fn () => 1);
        $t0 = hrtime(true);
        $node->serve(0.3);
        $took = (hrtime(true) - $t0) / 1e9;
        $this->assertGreaterThanOrEqual(0.29, $took);
        $this->assertLessThan(1.5, $took);
        $this->assertSame(0, $node->poll($again));
        $this->assertFalse($again);
        $node->close();
    }
}
