<?php
// The package's own PSR-4 autoloader (Hms\Ffi\ -> src/), for use without Composer:
//   require '/path/to/bindings/php/autoload.php';
// With Composer, composer.json's "autoload" section does the same.
declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    $prefix = 'Hms\\Ffi\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
