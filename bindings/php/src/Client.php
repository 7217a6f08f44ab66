<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;
use FFI\CData;

/**
 * A connection to one service. Calls are synchronous: call() encodes the value (Bytes raw, the rest
 * CBOR), waits for the reply and decodes it; callBytes() sends and returns bytes as they are, for hot
 * paths and pre-encoded payloads. Errors are thrown as the FfiException subclass of the status code;
 * isRemote() tells whether the service raised it.
 *
 * Close it with close(); closing its Node closes it too. One PHP thread, so no concurrent calls.
 */
final class Client
{
    private FFI $ffi;
    private ?CData $ptr;
    private CData $resp;
    private CData $respPtr;
    private CData $err;
    private CData $errPtr;
    /** @var array<string, int> function name => id, from the table received at connect */
    private array $ids = [];
    public readonly string $service;
    public readonly string $version;
    public readonly int $serverPid;
    public readonly int $maxMessage;

    /**
     * Connects with a node of its own (closed with the client); use Node::connect() to share a node.
     *
     * @param float|null $timeout handshake timeout in seconds (null = the library's default, 5 s)
     */
    public static function connect(string $service, string $version = '*', ?float $timeout = null, ?float $spinUs = null): self
    {
        $node = new Node(logHandlerErrors: false);
        try {
            $client = $node->connect($service, $version, $timeout, $spinUs);
        } catch (\Throwable $e) {
            $node->close();
            throw $e;
        }
        $client->ownedNode = $node;
        return $client;
    }

    private ?Node $ownedNode = null;

    /** @internal created by Node::connect() */
    public function __construct(private readonly Node $node, CData $ptr)
    {
        $this->ffi = Native::ffi();
        $this->ptr = $ptr;
        $this->resp = $this->ffi->new('hms_payload_t');
        $this->respPtr = FFI::addr($this->resp);
        $this->err = $this->ffi->new('hms_error_t');
        $this->errPtr = FFI::addr($this->err);
        $n = $this->ffi->hms_client_function_count($ptr);
        $name = $this->ffi->new('const char*');
        $id = $this->ffi->new('uint32_t');
        $flags = $this->ffi->new('uint32_t');
        for ($i = 0; $i < $n; $i++) {
            if ($this->ffi->hms_client_function_at($ptr, $i, FFI::addr($name), FFI::addr($id), FFI::addr($flags)) === 0) {
                $this->ids[FFI::string($name)] = $id->cdata;
            }
        }
        $this->service = $this->ffi->hms_client_service_name($ptr);
        $this->version = $this->ffi->hms_client_service_version($ptr);
        $this->serverPid = $this->ffi->hms_client_server_pid($ptr);
        $this->maxMessage = $this->ffi->hms_client_max_message($ptr);
    }

    /** @return array<string, int> the service's functions, name => id */
    public function functions(): array
    {
        return $this->ids;
    }

    /**
     * Calls $function with $value and returns the decoded reply.
     *
     * @param float|null $timeout seconds (null = no deadline)
     * @param string     $codec   "auto" (Bytes raw, anything else CBOR), "cbor", "json" or "raw"
     * @throws FfiException (the subclass of the status): the service's error (isRemote()) or a local one
     */
    public function call(string $function, mixed $value = null, ?float $timeout = null, string $codec = 'auto'): mixed
    {
        [$data, $ct] = Codec::encode($value, $codec);
        $reply = $this->callBytes($function, $data, $ct, $timeout, $replyType);
        return Codec::decode($replyType, $reply);
    }

    /**
     * Sends $data with content type $contentType (ContentType::*) as it is and returns the reply's
     * bytes; $replyType receives the reply's content type.
     *
     * @throws FfiException as call()
     */
    public function callBytes(string $function, string $data, int $contentType = ContentType::RAW, ?float $timeout = null, ?int &$replyType = null): string
    {
        $ptr = $this->ptr ?? throw new FailedPreconditionException("the client of {$this->service}@{$this->version} is closed; connect again");
        $fid = $this->ids[$function] ?? throw new NotFoundException(
            "{$this->service}@{$this->version} has no function '$function' (it has: " . (implode(', ', array_keys($this->ids)) ?: 'none') . ')');
        $st = $this->ffi->hms_call_bytes($ptr, $fid, $data, strlen($data), $contentType, $this->respPtr,
            $timeout === null ? -1 : Native::timeoutNs($timeout), $this->errPtr);
        $resp = $this->resp;
        $len = $resp->len;
        $out = $len > 0 ? FFI::string($resp->data, $len) : '';
        $replyType = $resp->content_type;
        $this->ffi->hms_payload_release($this->respPtr);
        if ($st !== 0) {
            $details = null;
            if ($out !== '') {
                try {
                    $details = Codec::decode($replyType, $out);
                } catch (FfiException) {
                    $details = new Cbor\Bytes($out);
                }
            }
            throw Native::error($st, $this->err, $details);
        }
        return $out;
    }

    /** Closes the connection (and the node connect() opened for it). Idempotent. */
    public function close(): void
    {
        if ($this->ptr !== null) {
            if (!$this->node->isClosed()) {
                $this->ffi->hms_client_close($this->ptr);
            }
            $this->ptr = null;
            $this->node->forget($this);
        }
        if ($this->ownedNode !== null) {
            $node = $this->ownedNode;
            $this->ownedNode = null;
            $node->close();
        }
    }

    public function __destruct()
    {
        $this->close();
    }
}
