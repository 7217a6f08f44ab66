<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;
use FFI\CData;

/**
 * What a handler can learn about the call it serves: the caller's kernel-verified identity
 * (SO_PEERCRED, never what the caller claims), its deadline, cancellation. Valid only while the
 * handler runs; afterwards every method throws FailedPreconditionException.
 */
final class CallContext
{
    private ?CData $call;

    /** @internal */
    public function __construct(private readonly FFI $ffi, CData $call)
    {
        $this->call = $call;
    }

    /** @internal */
    public function invalidate(): void
    {
        $this->call = null;
    }

    private function call(): CData
    {
        return $this->call ?? throw new FailedPreconditionException('a CallContext is only valid while its handler runs');
    }

    /** @return array{pid: int, uid: int, gid: int} */
    public function peer(): array
    {
        $pid = $this->ffi->new('int32_t');
        $uid = $this->ffi->new('uint32_t');
        $gid = $this->ffi->new('uint32_t');
        $this->ffi->hms_call_peer($this->call(), FFI::addr($pid), FFI::addr($uid), FFI::addr($gid));
        return ['pid' => $pid->cdata, 'uid' => $uid->cdata, 'gid' => $gid->cdata];
    }

    public function peerPid(): int
    {
        return $this->peer()['pid'];
    }

    /** Seconds left until the caller's deadline (may be <= 0), null when it set none. */
    public function timeLeft(): ?float
    {
        $ns = $this->ffi->hms_call_time_left_ns($this->call());
        return $ns === PHP_INT_MAX ? null : $ns / 1e9;
    }

    /** True once the caller cancelled the call or gave up on it: a long handler should stop. */
    public function isCancelled(): bool
    {
        return $this->ffi->hms_call_is_cancelled($this->call()) !== 0;
    }

    /** True for a one-way call: whatever the handler returns is discarded. */
    public function isOneway(): bool
    {
        return $this->ffi->hms_call_is_oneway($this->call()) !== 0;
    }

    public function functionName(): string
    {
        return $this->ffi->hms_call_function_name($this->call());
    }

    public function serviceName(): string
    {
        return $this->ffi->hms_call_service_name($this->call());
    }

    /** The call id (unsigned 64-bit on the wire; ids stay far below 2^63). */
    public function callId(): int
    {
        return $this->ffi->hms_call_id($this->call());
    }
}
