<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;
use FFI\CData;
use Hms\Ffi\Cbor\Bytes;

/**
 * A registered service (owned by its Node). Functions are PHP callables called back on the thread
 * that runs Node::serve()/poll() — see Node for the threading rule.
 *
 * A handler is `function (mixed $value[, CallContext $ctx]): mixed`. With the default codec "auto":
 * a CBOR request is decoded into PHP values, a raw request arrives as Cbor\Bytes, an empty one as
 * null; the reply to a CBOR request is CBOR (a returned Bytes becomes a CBOR byte string, so an echo
 * round-trips any CBOR exactly), to a JSON request JSON, and to a raw or empty request raw when the
 * handler returns Bytes, CBOR otherwise.
 * Codec "cbor" always replies CBOR; "json" replies JSON; "raw" hands the handler the request bytes as
 * a PHP string and sends back the string (or Bytes, or null = empty) it returns, raw.
 *
 * Errors: throw an FfiException subclass (NotFoundException, ...) to answer with its status code,
 * message and details (CBOR-encoded); anything else thrown becomes INTERNAL with the exception's class
 * and message. A throwing handler never takes the server down. Do not call exit() in a handler.
 */
final class Service
{
    public const CODECS = ['auto', 'cbor', 'json', 'raw'];

    private FFI $ffi;
    /** @var array<string, \Closure> the trampolines stay referenced as long as the service */
    private array $trampolines = [];

    /** @internal created by Node::service() */
    public function __construct(
        private readonly Node $node,
        private ?CData $ptr,
        public readonly string $name,
        public readonly string $version,
    ) {
        $this->ffi = Native::ffi();
    }

    /** @internal the node closed */
    public function detach(): void
    {
        $this->ptr = null;
    }

    /**
     * Adds function $name (ids are assigned in order from 1). Returns $this for chaining.
     *
     * @param callable $fn    fn(mixed $value[, CallContext $ctx]): mixed
     * @param string   $codec "auto" | "cbor" | "json" | "raw" (see the class comment)
     * @throws AlreadyExistsException for a duplicate name
     */
    public function function(string $name, callable $fn, string $codec = 'auto', bool $idempotent = false): self
    {
        if ($this->ptr === null) {
            throw new FailedPreconditionException("service {$this->name} belongs to a closed node");
        }
        if (!in_array($codec, self::CODECS, true)) {
            throw new InvalidArgumentException("unknown codec '$codec'; use one of " . implode(', ', self::CODECS));
        }
        $fn = \Closure::fromCallable($fn);
        $ref = new \ReflectionFunction($fn);
        $wantsCtx = $ref->isVariadic() || $ref->getNumberOfParameters() >= 2;
        $node = $this->node;
        $ffi = $this->ffi;
        $tramp = static function (CData $call, CData $req, $userData) use ($fn, $codec, $wantsCtx, $node, $ffi): int {
            // Nothing may escape an FFI callback (PHP makes that a fatal error): every path returns a status.
            try {
                return self::dispatch($ffi, $node, $fn, $codec, $wantsCtx, $call, $req);
            } catch (\Throwable $e) {
                try {
                    $ffi->hms_call_set_error($call, Status::INTERNAL, 'PHP handler failed while reporting an error: ' . substr($e->getMessage(), 0, 200), null, 0, 0);
                } catch (\Throwable) {
                }
                return Status::INTERNAL;
            }
        };
        $err = $ffi->new('hms_error_t');
        $flags = $idempotent ? $ffi->HMS_FN_IDEMPOTENT : $ffi->HMS_FN_DEFAULT;
        $st = $ffi->hms_function_add($this->ptr, $name, $flags, $tramp, null, FFI::addr($err));
        if ($st !== 0) {
            throw Native::error($st, $err);
        }
        $this->trampolines[$name] = $tramp;
        return $this;
    }

    private static function dispatch(FFI $ffi, Node $node, \Closure $fn, string $codec, bool $wantsCtx, CData $call, CData $req): int
    {
        $ctx = null;
        try {
            $len = $req->len;
            $data = $len > 0 ? FFI::string($req->data, $len) : '';
            $ct = $req->content_type;
            if ($codec === 'raw') {
                $arg = $data;
            } else {
                $arg = Codec::decode($ct, $data);
            }
            if ($wantsCtx) {
                $ctx = new CallContext($ffi, $call);
                $result = $fn($arg, $ctx);
            } else {
                $result = $fn($arg);
            }
            if ($codec === 'raw') {
                if ($result instanceof Bytes) {
                    $result = $result->data;
                } elseif ($result === null) {
                    $result = '';
                } elseif (!is_string($result)) {
                    throw new InternalException('a handler with codec "raw" must return a string, Bytes or null, not ' . get_debug_type($result));
                }
                $out = $result;
                $outCt = ContentType::RAW;
            } else {
                [$out, $outCt] = Codec::encode($result, $codec, $ct);
            }
            $st = $ffi->hms_call_reply($call, $out, strlen($out), $outCt, null);
            if ($st !== 0) {
                $ffi->hms_call_set_error($call, $st, sprintf('the %d-byte reply could not be sent (%s)', strlen($out), Status::name($st)), null, 0, 0);
            }
            return $st;
        } catch (FfiException $e) {
            $status = $e->getStatus() === Status::OK ? Status::UNKNOWN : $e->getStatus();
            $details = '';
            $detailsCt = ContentType::NONE;
            if ($e->getDetails() !== null) {
                try {
                    [$details, $detailsCt] = Codec::encode($e->getDetails(), 'auto');
                } catch (\Throwable) {
                    $details = '';
                    $detailsCt = ContentType::NONE;
                }
            }
            $ffi->hms_call_set_error($call, $status, self::clip($e->getMessage()), $details, strlen($details), $detailsCt);
            return $status;
        } catch (\Throwable $e) {
            $msg = get_class($e) . ': ' . $e->getMessage();
            if ($node->logHandlerErrors) {
                fwrite(STDERR, sprintf("hms-ffi: handler %s raised %s at %s:%d\n",
                    $ffi->hms_call_function_name($call), $msg, $e->getFile(), $e->getLine()));
            }
            $ffi->hms_call_set_error($call, Status::INTERNAL, self::clip($msg), null, 0, 0);
            return Status::INTERNAL;
        } finally {
            $ctx?->invalidate();
        }
    }

    /** The C side keeps 255 bytes of a message: cut at a UTF-8 boundary rather than mid-character. */
    private static function clip(string $msg): string
    {
        if (strlen($msg) <= 255) {
            return $msg;
        }
        $cut = substr($msg, 0, 255);
        for ($i = 0; $i < 3 && !preg_match('//u', $cut); $i++) {
            $cut = substr($cut, 0, -1);
        }
        return $cut;
    }
}
