<?php
use GuzzleHttp\Psr7\UploadedFile;
use GuzzleHttp\Psr7\Utils;
use Http\Psr7Test\UploadedFileIntegrationTest;

final class UploadedFileTest extends UploadedFileIntegrationTest
{
    public function createSubject()
    {
        return new UploadedFile(Utils::streamFor('writing to tempfile'), 19, UPLOAD_ERR_OK);
    }
}
