<?php
use GuzzleHttp\Psr7\ServerRequest;
use Http\Psr7Test\ServerRequestIntegrationTest;

final class ServerRequestTest extends ServerRequestIntegrationTest
{
    // Guzzle 2.4 accepts any parsed body.
    protected $skippedTests = [
        'testGetParsedBodyInvalid' => 'Guzzle accepts any parsed body',
    ];

    public function createSubject()
    {
        return new ServerRequest('GET', '/', [], null, '1.1', $_SERVER);
    }
}
