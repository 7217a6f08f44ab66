<?php

declare(strict_types=1);

namespace Hms\Ffi;

use Hms\Ffi\Cbor\Bytes;
use Hms\Ffi\Cbor\Cbor;

/** Payload <-> PHP value by content type: the one place the binding's call-level codec rules live. */
final class Codec
{
    /**
     * A payload as a PHP value: CBOR decoded, JSON decoded (objects as arrays), raw and unknown
     * content types as Bytes, an empty payload of type NONE as null.
     *
     * @throws Cbor\CborException|InvalidArgumentException for a malformed CBOR or JSON payload
     */
    public static function decode(int $contentType, string $data): mixed
    {
        switch ($contentType) {
            case ContentType::CBOR:
                return Cbor::decode($data);
            case ContentType::NONE:
                if ($data === '') {
                    return null;
                }
                return new Bytes($data);
            case ContentType::JSON:
                try {
                    return json_decode($data, true, 512, JSON_THROW_ON_ERROR);
                } catch (\JsonException $e) {
                    throw new InvalidArgumentException('malformed JSON payload: ' . $e->getMessage());
                }
            default:
                return new Bytes($data);
        }
    }

    /**
     * A PHP value as [bytes, content type]. "auto": a reply to a CBOR (JSON) request is CBOR (JSON),
     * so a CBOR byte string comes back as one; otherwise Bytes go raw and everything else CBOR.
     * "cbor", "json": always that codec; "raw": strings and Bytes as they are.
     *
     * @param int $requestType the content type of the request being answered (handlers), NONE for calls
     * @return array{0: string, 1: int}
     */
    public static function encode(mixed $value, string $codec = 'auto', int $requestType = ContentType::NONE): array
    {
        switch ($codec) {
            case 'auto':
                if ($requestType === ContentType::JSON) {
                    return self::encode($value, 'json');
                }
                if ($value instanceof Bytes && $requestType !== ContentType::CBOR) {
                    return [$value->data, ContentType::RAW];
                }
                return [Cbor::encode($value), ContentType::CBOR];
            case 'cbor':
                return [Cbor::encode($value), ContentType::CBOR];
            case 'json':
                try {
                    return [json_encode($value, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION), ContentType::JSON];
                } catch (\JsonException $e) {
                    throw new InvalidArgumentException('value cannot be encoded as JSON: ' . $e->getMessage());
                }
            case 'raw':
                if ($value instanceof Bytes) {
                    return [$value->data, ContentType::RAW];
                }
                if (is_string($value)) {
                    return [$value, ContentType::RAW];
                }
                throw new InvalidArgumentException('codec "raw" sends strings or Bytes, not ' . get_debug_type($value));
            default:
                throw new InvalidArgumentException("unknown codec '$codec'; use auto, cbor, json or raw");
        }
    }
}
