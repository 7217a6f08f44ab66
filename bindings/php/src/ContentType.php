<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** Content types carried in every frame (HMS_CT_* of the header; checked by tests/StatusTest.php). */
final class ContentType
{
    public const NONE = 0;
    public const RAW = 1;
    public const CBOR = 2;
    public const JSON = 3;
    public const PROTOBUF = 4;
    public const ARROW = 5;
    public const USER = 1024;
}
