<?php
// PHPUnit bootstrap: the package's own autoloader, and every PHP warning/notice turned into an
// exception so that "never a warning" is checked by every test.
declare(strict_types=1);

require dirname(__DIR__) . '/autoload.php';
require __DIR__ . '/ServerProcess.php';

error_reporting(E_ALL);
set_error_handler(static function (int $no, string $msg, string $file, int $line): bool {
    if (!(error_reporting() & $no)) {
        return false;  // silenced with @ on purpose
    }
    throw new \ErrorException($msg, 0, $no, $file, $line);
});
