<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;
use FFI\CData;

/**
 * Loads libhms_ffi through PHP's FFI extension with the declarations generated from the public header
 * (hms_ffi.php.h, see tools/gen_header.py) and checks that library and header agree on the ABI.
 *
 * The library is found through, in order:
 *   1. HMS_FFI_LIB: the path of libhms_ffi.so, or the directory holding it;
 *   2. `hms-ffi --libdir` (the command the Python package hms_ffi_native installs).
 *
 * FFI must be allowed: the CLI default `ffi.enable=preload` allows it in CLI scripts; web SAPIs need
 * `ffi.enable=true` (or preloading).
 */
final class Native
{
    public const LIBRARY = 'libhms_ffi.so';

    private static ?FFI $ffi = null;

    /** The process-wide FFI instance, loaded on first use. */
    public static function ffi(): FFI
    {
        return self::$ffi ??= self::load();
    }

    /** The generated header shipped with this package. */
    public static function headerPath(): string
    {
        return dirname(__DIR__) . '/hms_ffi.php.h';
    }

    /**
     * Loads the library with a header and checks the ABI. Normally called once through ffi();
     * tests call it directly with other headers.
     *
     * @throws FailedPreconditionException when FFI is unavailable, the library cannot be found or
     *         loaded, or its ABI version differs from the header's
     */
    public static function load(?string $library = null, ?string $header = null): FFI
    {
        if (!extension_loaded('ffi')) {
            throw new FailedPreconditionException("PHP's FFI extension is not loaded: install it (Debian: php8.x-common ships it; enable extension=ffi)");
        }
        $header ??= self::headerPath();
        $library ??= self::libraryPath();
        $decls = @file_get_contents($header);
        if ($decls === false) {
            throw new FailedPreconditionException("cannot read the FFI header $header; regenerate it with python bindings/php/tools/gen_header.py");
        }
        try {
            $ffi = FFI::cdef($decls, $library);
        } catch (\FFI\Exception $e) {
            throw new FailedPreconditionException("cannot load $library with $header: {$e->getMessage()}; check HMS_FFI_LIB or reinstall hms_ffi_native", previous: $e);
        } catch (\Error $e) {  // FFI disabled by ffi.enable=false
            throw new FailedPreconditionException("FFI is not usable here ({$e->getMessage()}); set ffi.enable=true or run from the CLI", previous: $e);
        }
        $lib = $ffi->hms_abi_version();
        $hdr = $ffi->HMS_FFI_ABI_VERSION;
        if ($lib !== $hdr) {
            throw new FailedPreconditionException(
                "ABI mismatch: $library has ABI version $lib but the PHP binding's header $header was generated for ABI version $hdr; "
                . "use a libhms_ffi built from the same release as this binding (or regenerate the header and update the binding)");
        }
        return $ffi;
    }

    /** Where libhms_ffi.so is: HMS_FFI_LIB, else `hms-ffi --libdir`. */
    public static function libraryPath(): string
    {
        $env = getenv('HMS_FFI_LIB');
        if ($env !== false && $env !== '') {
            $path = is_dir($env) ? rtrim($env, '/') . '/' . self::LIBRARY : $env;
            if (!is_file($path)) {
                throw new FailedPreconditionException("HMS_FFI_LIB=$env but $path does not exist; point it at libhms_ffi.so or its directory");
            }
            return $path;
        }
        $dir = self::run(['hms-ffi', '--libdir']);
        $path = $dir . '/' . self::LIBRARY;
        if (!is_file($path)) {
            throw new FailedPreconditionException("`hms-ffi --libdir` printed $dir but $path does not exist; rebuild hms_ffi_native (pip install .) or set HMS_FFI_LIB");
        }
        return $path;
    }

    /** @param list<string> $cmd */
    private static function run(array $cmd): string
    {
        $hint = 'install the Python package hms_ffi_native (pip install hms-ffi-native, which provides the hms-ffi command) '
            . 'or set HMS_FFI_LIB to the path of libhms_ffi.so';
        $proc = @proc_open($cmd, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes);
        if (!is_resource($proc)) {
            throw new FailedPreconditionException("cannot run `" . implode(' ', $cmd) . "` to locate libhms_ffi.so; $hint");
        }
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);
        $rc = proc_close($proc);
        if ($rc !== 0) {
            $why = $rc === 127 ? 'command not found' : 'exit status ' . $rc . ': ' . trim((string)$err);
            throw new FailedPreconditionException("`" . implode(' ', $cmd) . "` failed ($why); $hint");
        }
        return trim((string)$out);
    }

    /** The exception for a failed call, from the status and the filled hms_error_t. */
    public static function error(int $status, CData $err, mixed $details = null): FfiException
    {
        return FfiException::fromStatus(
            $status,
            FFI::string($err->message),
            $err->origin === self::ffi()->HMS_ORIGIN_REMOTE,
            $details,
            $err->os_errno,
        );
    }

    /** Seconds (float, null = none) to the C API's nanoseconds (< 0 = none). */
    public static function timeoutNs(?float $seconds): int
    {
        if ($seconds === null) {
            return -1;
        }
        if (is_nan($seconds) || $seconds < 0) {
            throw new InvalidArgumentException("a timeout must be >= 0 seconds or null for none, got $seconds");
        }
        return $seconds >= 9.2e9 ? PHP_INT_MAX : (int)($seconds * 1e9);
    }
}
