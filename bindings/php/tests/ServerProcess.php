<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests;

/**
 * A PHP service in a child process (tests/fixtures/server.php) in a fresh runtime directory, so the
 * serving thread and the calling thread are different processes as in production.
 */
final class ServerProcess
{
    /** @var resource */
    private $proc;
    /** @var array<int, resource> */
    private array $pipes = [];
    public readonly int $pid;

    public function __construct(string $service, string $script = __DIR__ . '/fixtures/server.php')
    {
        $this->proc = proc_open([PHP_BINARY, $script, $service], [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $this->pipes);
        $line = fgets($this->pipes[1]);
        if ($line !== "ready\n") {
            $err = stream_get_contents($this->pipes[2]);
            $this->stop();
            throw new \RuntimeException("test server $service did not start: " . var_export($line, true) . " $err");
        }
        $this->pid = proc_get_status($this->proc)['pid'];
    }

    public static function runtimeDir(): string
    {
        $dir = sys_get_temp_dir() . '/hmsphp-' . bin2hex(random_bytes(4));
        mkdir($dir, 0700);
        putenv("HMS_FFI_RUNTIME_DIR=$dir");
        return $dir;
    }

    public static function removeDir(string $dir): void
    {
        if (!is_dir($dir) || is_link($dir)) {
            return;
        }
        foreach (scandir($dir) ?: [] as $f) {
            if ($f === '.' || $f === '..') {
                continue;
            }
            $p = "$dir/$f";
            is_dir($p) && !is_link($p) ? self::removeDir($p) : unlink($p);
        }
        rmdir($dir);
    }

    public function alive(): bool
    {
        return proc_get_status($this->proc)['running'];
    }

    /** Stops the server with $signal and returns its exit code (-1 when it had to be killed). */
    public function stop(int $signal = SIGTERM): int
    {
        if (!is_resource($this->proc)) {
            return -1;
        }
        proc_terminate($this->proc, $signal);
        $deadline = microtime(true) + 5;
        while (($st = proc_get_status($this->proc))['running'] && microtime(true) < $deadline) {
            usleep(10000);
        }
        if ($st['running']) {
            proc_terminate($this->proc, SIGKILL);
            usleep(50000);
        }
        foreach ($this->pipes as $p) {
            fclose($p);
        }
        proc_close($this->proc);
        return $st['running'] ? -1 : ($st['signaled'] ? -$st['termsig'] : $st['exitcode']);
    }

    public function stderr(): string
    {
        stream_set_blocking($this->pipes[2], false);
        return (string)stream_get_contents($this->pipes[2]);
    }
}
