<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;
use FFI\CData;

/**
 * A process's presence in the runtime directory: owns the services it serves and the clients it
 * opened. Close it with close() (the destructor is only a backstop).
 *
 * Threading: PHP runs on one thread, and so does this binding. serve() and poll() run the C dispatch
 * loop (hms_node_serve / hms_node_poll) on the calling PHP thread, so every handler is called back on
 * that same thread, between two PHP statements of your script — never concurrently and never from a
 * thread PHP did not create. The binding deliberately does not offer hms_node_start()'s background
 * dispatcher thread: PHP's engine is not thread-safe.
 *
 * Signals: serve() returns to PHP when a signal interrupts its sleep, so pcntl handlers run; call
 * stopOnSignals() (or your own pcntl handler calling stop()) to end serve() on SIGTERM/SIGINT.
 */
final class Node
{
    /** serve() returns to PHP at least this often (ns), so signal handlers run within 0.2 s. */
    private const SLICE_NS = 200_000_000;

    private FFI $ffi;
    private ?CData $ptr;
    private CData $err;
    private CData $errPtr;
    /** @var list<Service> */
    private array $services = [];
    /** @var \WeakMap<Client, true> */
    private \WeakMap $clients;
    private bool $serving = false;
    private bool $stopRequested = false;

    /**
     * @param string|null $name       node name for listings (default "node-<pid>")
     * @param string|null $runtimeDir default: $HMS_FFI_RUNTIME_DIR, else $XDG_RUNTIME_DIR/hms-ffi, else /tmp/hms-ffi-<uid>
     * @param float|null  $spinUs     busy-wait budget before sleeping, in microseconds (null = the library's default, 0 = never spin)
     * @param int         $ringBytes  per-direction ring size of the connections this node serves (0 = default)
     * @param bool        $logHandlerErrors write one line to STDERR when a handler throws something that is not an FfiException
     */
    public function __construct(
        ?string $name = null,
        ?string $runtimeDir = null,
        ?float $spinUs = null,
        int $ringBytes = 0,
        public readonly bool $logHandlerErrors = true,
    ) {
        $this->ffi = Native::ffi();
        $this->clients = new \WeakMap();
        $this->err = $this->ffi->new('hms_error_t');
        $this->errPtr = FFI::addr($this->err);
        $opts = $this->ffi->new('hms_node_options_t');
        $this->ffi->hms_node_options_init(FFI::addr($opts));
        $keep = [];
        if ($name !== null) {
            $keep[] = $c = self::cString($name);
            $opts->name = FFI::cast('char *', $c);
        }
        if ($runtimeDir !== null) {
            $keep[] = $c = self::cString($runtimeDir);
            $opts->runtime_dir = FFI::cast('char *', $c);
        }
        if ($spinUs !== null) {
            $opts->spin_ns = (int)($spinUs * 1000);
        }
        $opts->ring_bytes = $ringBytes;
        $out = $this->ffi->new('hms_node_t*');
        $st = $this->ffi->hms_node_open(FFI::addr($opts), FFI::addr($out), $this->errPtr);
        if ($st !== 0) {
            throw Native::error($st, $this->err);
        }
        $this->ptr = $out;
    }

    /** A NUL-terminated C copy of a PHP string (FFI frees it with the returned CData). */
    public static function cString(string $s): CData
    {
        if (str_contains($s, "\0")) {
            throw new InvalidArgumentException('names and versions cannot contain NUL bytes');
        }
        $c = FFI::new('char[' . (strlen($s) + 1) . ']');
        FFI::memcpy($c, $s, strlen($s));
        return $c;
    }

    /** @internal */
    public function handle(): CData
    {
        if ($this->ptr === null) {
            throw new FailedPreconditionException('the node is closed; open a new Node');
        }
        return $this->ptr;
    }

    public function runtimeDir(): string
    {
        return $this->ffi->hms_node_runtime_dir($this->handle());
    }

    /**
     * Registers service $name@$version (semantic version "MAJOR.MINOR.PATCH") and makes it
     * discoverable. Add functions with Service::function().
     *
     * @throws AlreadyExistsException when a live process already serves name@version
     */
    public function service(string $name, string $version = '1.0.0'): Service
    {
        $out = $this->ffi->new('hms_service_t*');
        $st = $this->ffi->hms_service_add($this->handle(), $name, $version, FFI::addr($out), $this->errPtr);
        if ($st !== 0) {
            throw Native::error($st, $this->err);
        }
        return $this->services[] = new Service($this, $out, $name, $version);
    }

    /**
     * Connects to the newest live service $service whose version satisfies $version ("^1", "~1.2",
     * ">=1.2", "1.2.3", "*").
     *
     * @param float|null $timeout handshake timeout in seconds (null = the library's default, 5 s)
     * @throws NotFoundException when no live service matches; UnavailableException when it refused or died
     */
    public function connect(string $service, string $version = '*', ?float $timeout = null, ?float $spinUs = null): Client
    {
        $opts = $this->ffi->new('hms_connect_options_t');
        $this->ffi->hms_connect_options_init(FFI::addr($opts));
        if ($timeout !== null) {
            $opts->timeout_ns = Native::timeoutNs($timeout);
        }
        if ($spinUs !== null) {
            $opts->spin_ns = (int)($spinUs * 1000);
        }
        $out = $this->ffi->new('hms_client_t*');
        $st = $this->ffi->hms_connect($this->handle(), $service, $version, FFI::addr($opts), FFI::addr($out), $this->errPtr);
        if ($st !== 0) {
            throw Native::error($st, $this->err);
        }
        $client = new Client($this, $out);
        $this->clients[$client] = true;
        return $client;
    }

    /** @internal called by Client::close() */
    public function forget(Client $client): void
    {
        unset($this->clients[$client]);
    }

    /**
     * Runs the dispatch loop on this (PHP's) thread: accepts connections and calls handlers until
     * stop() is called (from a handler or a signal handler), or for $timeout seconds.
     *
     * @throws FailedPreconditionException when this node is already serving
     */
    public function serve(?float $timeout = null): void
    {
        $ptr = $this->handle();
        if ($this->serving) {
            throw new FailedPreconditionException('serve() is already running on this node (called from a handler?)');
        }
        $this->serving = true;
        $this->stopRequested = false;
        $deadline = $timeout === null ? null : hrtime(true) + Native::timeoutNs($timeout);
        try {
            while (!$this->stopRequested) {
                // Bounded slices: a signal that lands while the C loop is busy (not in its sleep) does
                // not interrupt it, and PHP runs its handlers only between FFI calls.
                $slice = $deadline === null ? self::SLICE_NS : min(self::SLICE_NS, max(0, $deadline - hrtime(true)));
                $st = $this->ffi->hms_node_serve($ptr, $slice, $this->errPtr);
                if ($st === Status::CANCELLED) {
                    // A signal interrupted the sleep: let PHP run its handlers (which may call stop()).
                    if (function_exists('pcntl_signal_dispatch') && !pcntl_async_signals()) {
                        pcntl_signal_dispatch();
                    }
                } elseif ($st !== Status::OK) {
                    throw Native::error($st, $this->err);
                }
                if ($deadline !== null && hrtime(true) >= $deadline) {
                    break;
                }
            }
        } finally {
            $this->serving = false;
        }
    }

    /**
     * Serving from your own loop: handles what is ready without blocking, then returns the number of
     * requests handled. $again is set to true when more are already waiting. Handlers run on this thread.
     */
    public function poll(?bool &$again = null): int
    {
        $served = $this->ffi->new('uint32_t');
        $ag = $this->ffi->new('int');
        $st = $this->ffi->hms_node_poll($this->handle(), FFI::addr($served), FFI::addr($ag), $this->errPtr);
        if ($st !== 0) {
            throw Native::error($st, $this->err);
        }
        $again = $ag->cdata !== 0;
        return $served->cdata;
    }

    /** Asks serve() to return. Safe from handlers and from signal handlers. */
    public function stop(): void
    {
        $this->stopRequested = true;
        if ($this->ptr !== null) {
            $this->ffi->hms_node_stop($this->ptr);
        }
    }

    /**
     * Makes SIGTERM and SIGINT (or the given signals) stop serve(), so the script can close the node
     * and exit 0. Needs the pcntl extension (part of php-cli on Debian).
     *
     * @param list<int>|null $signals
     */
    public function stopOnSignals(?array $signals = null): void
    {
        if (!function_exists('pcntl_signal')) {
            throw new FailedPreconditionException('stopOnSignals() needs the pcntl extension (php-cli); without it SIGTERM ends the process at once');
        }
        pcntl_async_signals(true);
        foreach ($signals ?? [SIGTERM, SIGINT] as $sig) {
            // restart_syscalls=false: the signal interrupts hms_node_serve's sleep instead of resuming it.
            pcntl_signal($sig, fn () => $this->stop(), false);
        }
    }

    /**
     * Closes the clients opened from this node, unregisters its services and frees everything. Peers
     * see UNAVAILABLE. Idempotent. Not from a handler while serving: stop() first.
     */
    public function close(): void
    {
        if ($this->ptr === null) {
            return;
        }
        if ($this->serving) {
            throw new FailedPreconditionException('close() while serve() runs: call stop() and close the node after serve() returns');
        }
        foreach ($this->clients as $client => $_) {
            $client->close();
        }
        $this->ffi->hms_node_close($this->ptr);
        $this->ptr = null;
        foreach ($this->services as $svc) {
            $svc->detach();
        }
        $this->services = [];
    }

    public function isClosed(): bool
    {
        return $this->ptr === null;
    }

    public function __destruct()
    {
        if (!$this->serving) {
            $this->close();
        }
    }
}
