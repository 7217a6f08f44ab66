<?php

declare(strict_types=1);

use Hms\Ffi\ContentType;
use Hms\Ffi\FailedPreconditionException;
use Hms\Ffi\FfiException;
use Hms\Ffi\Native;
use Hms\Ffi\NotFoundException;
use Hms\Ffi\Status;
use PHPUnit\Framework\TestCase;

final class StatusTest extends TestCase
{
    public function testStatusConstantsMatchTheHeaderAndTheLibrary(): void
    {
        $ffi = Native::ffi();
        $all = Status::all();
        $this->assertCount(17, $all);
        foreach ($all as $name => $code) {
            $this->assertSame($ffi->{"HMS_$name"}, $code, "Status::$name");
            $this->assertSame($name, $ffi->hms_status_str($code), "hms_status_str($code)");
            $this->assertSame($name, Status::name($code));
        }
        $this->assertSame('UNRECOGNIZED_STATUS', Status::name(99));
        $this->assertSame($ffi->hms_status_str(99), Status::name(99));
        foreach ((new ReflectionClass(ContentType::class))->getConstants() as $name => $ct) {
            $this->assertSame($ffi->{"HMS_CT_$name"}, $ct, "ContentType::$name");
        }
    }

    public function testOneExceptionClassPerStatusCode(): void
    {
        $seen = [];
        foreach (Status::all() as $name => $code) {
            if ($code === Status::OK) {
                continue;
            }
            $class = 'Hms\\Ffi\\' . str_replace('_', '', ucwords(strtolower($name), '_')) . 'Exception';
            $this->assertTrue(class_exists($class), "$class exists");
            $e = FfiException::fromStatus($code, "msg $code", true, ['d' => 1], 0);
            $this->assertSame($class, get_class($e), "status $name");
            $this->assertInstanceOf(FfiException::class, $e);
            $this->assertSame($code, $e->getStatus());
            $this->assertSame($code, $e->getCode());
            $this->assertSame($name, $e->getStatusName());
            $this->assertTrue($e->isRemote());
            $this->assertSame(['d' => 1], $e->getDetails());
            $this->assertSame("msg $code", $e->getMessage());
            $own = new $class('thrown by hand');  // the class knows its own code
            $this->assertSame($code, $own->getStatus());
            $this->assertFalse($own->isRemote());
            $seen[$class] = true;
        }
        $this->assertCount(16, $seen);
        $this->assertSame(FfiException::class, get_class(FfiException::fromStatus(77, 'x')));
        $this->assertSame(77, FfiException::fromStatus(77, 'x')->getStatus());
        $this->assertSame(Status::UNKNOWN, (new FfiException('x'))->getStatus());
    }

    public function testAbiMismatchIsRefusedNamingBothVersions(): void
    {
        $ffi = Native::ffi();
        $lib = Native::libraryPath();
        $header = (string)file_get_contents(Native::headerPath());
        $abi = $ffi->HMS_FFI_ABI_VERSION;
        $this->assertSame($abi, $ffi->hms_abi_version());
        $patched = preg_replace('/HMS_FFI_ABI_VERSION = \d+/', 'HMS_FFI_ABI_VERSION = 9999', $header, 1, $n);
        $this->assertSame(1, $n);
        $tmp = tempnam(sys_get_temp_dir(), 'hmsabi');
        file_put_contents($tmp, $patched);
        try {
            Native::load($lib, $tmp);
            $this->fail('loaded a library with a different ABI');
        } catch (FailedPreconditionException $e) {
            $this->assertStringContainsString("ABI version $abi", $e->getMessage());
            $this->assertStringContainsString('ABI version 9999', $e->getMessage());
        } finally {
            unlink($tmp);
        }
    }

    public function testLibraryLocation(): void
    {
        $saved = getenv('HMS_FFI_LIB');
        try {
            $path = Native::libraryPath();
            $this->assertFileExists($path);
            putenv('HMS_FFI_LIB=' . dirname($path));  // a directory works
            $this->assertSame(dirname($path) . '/libhms_ffi.so', Native::libraryPath());
            putenv('HMS_FFI_LIB=/nonexistent/libhms_ffi.so');
            try {
                Native::libraryPath();
                $this->fail('accepted a missing library');
            } catch (FailedPreconditionException $e) {
                $this->assertStringContainsString('/nonexistent/libhms_ffi.so', $e->getMessage());
            }
        } finally {
            putenv($saved === false ? 'HMS_FFI_LIB' : "HMS_FFI_LIB=$saved");
        }
    }

    public function testTheLibraryIsFoundThroughHmsFfiLibdirWithoutTheEnvironmentVariable(): void
    {
        $saved = getenv('HMS_FFI_LIB');
        putenv('HMS_FFI_LIB');
        try {
            $path = Native::libraryPath();
        } finally {
            if ($saved !== false) {
                putenv("HMS_FFI_LIB=$saved");
            }
        }
        $this->assertSame(trim((string)shell_exec('hms-ffi --libdir')) . '/libhms_ffi.so', $path);
    }

    public function testHeaderVersionMatchesTheLibrary(): void
    {
        $ffi = Native::ffi();
        $this->assertSame(
            "{$ffi->HMS_FFI_VERSION_MAJOR}.{$ffi->HMS_FFI_VERSION_MINOR}.{$ffi->HMS_FFI_VERSION_PATCH}",
            $ffi->hms_version_string());
    }
}
