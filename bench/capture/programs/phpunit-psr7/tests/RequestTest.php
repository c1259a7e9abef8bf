<?php
use GuzzleHttp\Psr7\Request;
use Http\Psr7Test\RequestIntegrationTest;

final class RequestTest extends RequestIntegrationTest
{
    // Where Guzzle 2.4 departs from what the suite expects (Guzzle's own
    // copy of the suite skips the same).
    protected $skippedTests = [
        'testMethodIsCaseSensitive' => 'Guzzle upper-cases the method',
        'testWithHeaderInvalidArguments' => 'Guzzle accepts false as a header value',
        'testWithAddedHeaderInvalidArguments' => 'Guzzle accepts false as a header value',
    ];

    public function createSubject()
    {
        return new Request('GET', '/');
    }
}
